# Prism backend plugins. `make help` lists the targets.

SHELL           := /bin/bash
GO              ?= go
VERSION         ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT          ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_TIME      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
REGISTRY        ?= prism
CONTAINER_ENGINE ?= podman
PLUGINS         := postgres kafka redis
TOOL            := $(GO) tool -modfile=tools/go.mod
LDFLAGS         := -s -w \
	-X github.com/prism-gateway/plugins/core.Version=$(VERSION) \
	-X github.com/prism-gateway/plugins/core.Commit=$(COMMIT) \
	-X github.com/prism-gateway/plugins/core.BuildTime=$(BUILD_TIME)

.DEFAULT_GOAL := binaries
.PHONY: help generate lint vet fmt binaries services services-stop services-status test \
	bench-postgres bench-kafka bench-redis run watch $(addprefix run-,$(PLUGINS)) \
	build build-debug $(PLUGINS) $(addsuffix -debug,$(PLUGINS)) sizes push clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

generate: ## Regenerate Go code from proto/ (committed under gen/)
	bash scripts/generate.sh

binaries: ## Build static bin/<name>-plugin binaries and bin/prism-watcher (CGO_ENABLED=0)
	@mkdir -p bin
	@for p in $(PLUGINS); do \
		echo "go build bin/$$p-plugin"; \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$$p-plugin ./$$p || exit 1; \
	done
	@echo "go build bin/prism-watcher"
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/prism-watcher ./watcher

PLUGIN ?= redis
watch: ## Rebuild and hot-swap one plugin in dev mode on source/config change: make watch PLUGIN=redis
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -o bin/prism-watcher ./watcher
	bin/prism-watcher --plugin $(PLUGIN)

services: ## Install (if missing) and start PostgreSQL, Redis (+ cluster) and Kafka for tests
	bash scripts/services.sh start

services-stop: ## Stop the test services
	bash scripts/services.sh stop

services-status: ## Show which test services run
	bash scripts/services.sh status

test: services ## The test command: start services, then go test -race over every package
	$(GO) test -race -count=1 -timeout 30m ./...

vet: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

fmt: ## Format all Go code
	gofmt -w $$(git ls-files '*.go')

lint: vet ## vet + buf lint + golangci-lint
	bash scripts/buf-lint.sh
	$(TOOL) golangci-lint run ./...

bench-postgres: services ## KeyValue benchmark: plugin vs direct pgx
	$(GO) run ./postgres/bench

bench-kafka: services ## Stream benchmark: plugin vs direct franz-go
	$(GO) run ./kafka/bench

bench-redis: services ## Cache benchmark: plugin vs direct go-redis
	$(GO) run ./redis/bench

run: binaries ## All three plugins in dev mode (embedded backends) on 9090-9092; Ctrl-C stops
	bash scripts/run-dev.sh

run-postgres: binaries ## Run the postgres plugin against the local test PostgreSQL
	DATABASE_URL=$${DATABASE_URL:-postgres://prism:prism@127.0.0.1:5432/prism} bin/postgres-plugin --config postgres/config.yaml

run-kafka: binaries ## Run the kafka plugin against the local test Kafka (SCRAM listener)
	KAFKA_BROKERS=$${KAFKA_BROKERS:-127.0.0.1:29093} KAFKA_SASL_USERNAME=$${KAFKA_SASL_USERNAME:-prism} \
	KAFKA_SASL_PASSWORD=$${KAFKA_SASL_PASSWORD:-prism} bin/kafka-plugin --config kafka/config.yaml

run-redis: binaries ## Run the redis plugin against the local test Redis (ACL user)
	REDIS_ADDRESS=$${REDIS_ADDRESS:-127.0.0.1:6379} REDIS_USERNAME=$${REDIS_USERNAME:-prism} \
	REDIS_PASSWORD=$${REDIS_PASSWORD:-prism} bin/redis-plugin --config redis/config.yaml

# Container images (Podman by default; CONTAINER_ENGINE=docker works too).
build: $(PLUGINS) ## Build all production images
build-debug: $(addsuffix -debug,$(PLUGINS)) ## Build all debug images (with busybox)

$(PLUGINS): ## Build one production image, e.g. make postgres
	$(CONTAINER_ENGINE) build -f $@/Dockerfile --target prod \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		-t $(REGISTRY)/$@-plugin:$(VERSION) -t $(REGISTRY)/$@-plugin:latest .

$(addsuffix -debug,$(PLUGINS)): ## Build one debug image, e.g. make kafka-debug
	$(CONTAINER_ENGINE) build -f $(@:-debug=)/Dockerfile --target debug \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		-t $(REGISTRY)/$(@:-debug=)-plugin:$(VERSION)-debug -t $(REGISTRY)/$(@:-debug=)-plugin:debug .

sizes: ## Show image sizes
	$(CONTAINER_ENGINE) images --filter 'reference=$(REGISTRY)/*-plugin' --format '{{.Repository}}:{{.Tag}} {{.Size}}'

push: ## Push images for VERSION to REGISTRY
	@for p in $(PLUGINS); do \
		$(CONTAINER_ENGINE) push $(REGISTRY)/$$p-plugin:$(VERSION) || exit 1; \
		$(CONTAINER_ENGINE) push $(REGISTRY)/$$p-plugin:$(VERSION)-debug || exit 1; \
	done

clean: ## Remove build output (not the test services' data)
	rm -rf bin .cache
