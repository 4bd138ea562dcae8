// Command postgres-plugin serves prism.keyvalue.v1.KeyValueService on PostgreSQL.
package main

import (
	"os"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

func main() {
	os.Exit(core.Run(os.Args[1:], postgreskv.New()))
}
