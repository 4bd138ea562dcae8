# Prism backend plugins. `make help` lists the targets.

SHELL           := /bin/bash
GO              ?= go
VERSION         ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT          ?= $(shell git rev-parse HEAD 2>/dev/null)
# Evaluated once per make run, so every binary and image of one run carries the same stamp.
BUILD_TIME      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
BUILD_TIME      := $(BUILD_TIME)
REGISTRY        ?= prism
CONTAINER_ENGINE ?= podman
PLUGINS         := postgres kafka redis
TOOL            := $(GO) tool -modfile=tools/go.mod
LDFLAGS         := -s -w \
	-X github.com/prism-gateway/plugins/core.Version=$(VERSION) \
	-X github.com/prism-gateway/plugins/core.Commit=$(COMMIT) \
	-X github.com/prism-gateway/plugins/core.BuildTime=$(BUILD_TIME)
# grpcnotrace leaves out golang.org/x/net/trace (and with it html/template, whose reflection
# keeps every exported method alive): 3-8 MB less per binary. The images add nodev (no dev
# backends); bin/<name>-plugin keeps them for make run / --dev.
GO_TAGS         ?= grpcnotrace
IMAGE_GO_TAGS   ?= nodev grpcnotrace

# Images: IMAGE_SOURCE=offline (default) assembles them FROM scratch from bin/image/ and local
# base images (images/), no registry needed; IMAGE_SOURCE=registry compiles in GO_IMAGE on
# distroless. Both give the same layout.
IMAGE_SOURCE    ?= offline
GO_IMAGE        ?= docker.io/library/golang:1.26
ifeq ($(IMAGE_SOURCE),offline)
BASE_IMAGE       ?= localhost/prism-base:static-nonroot
DEBUG_BASE_IMAGE ?= localhost/prism-base:debug-nonroot
# Podman must not try a registry for the local base images; Docker uses local images as they are.
OFFLINE_FLAGS    := --network none $(if $(filter podman,$(CONTAINER_ENGINE)),--pull=never)
IMAGE_BUILD_ARGS := $(OFFLINE_FLAGS) --build-arg BINARY=prebuilt
IMAGE_PREREQS    := image-binaries image-base
else ifeq ($(IMAGE_SOURCE),registry)
BASE_IMAGE       ?= gcr.io/distroless/static-debian12:nonroot
DEBUG_BASE_IMAGE ?= gcr.io/distroless/static-debian12:debug-nonroot
IMAGE_BUILD_ARGS := --build-arg BINARY=build
IMAGE_PREREQS    :=
else
$(error IMAGE_SOURCE must be offline or registry, got '$(IMAGE_SOURCE)')
endif
IMAGE_BUILD_ARGS += --build-arg GO_IMAGE=$(GO_IMAGE) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	--build-arg DEBUG_BASE_IMAGE=$(DEBUG_BASE_IMAGE) --build-arg VERSION=$(VERSION) \
	--build-arg COMMIT=$(COMMIT) --build-arg BUILD_TIME=$(BUILD_TIME)
# Podman here needs runc, cgroupfs and explicit ulimits (scripts/containers.conf).
ifeq ($(CONTAINER_ENGINE),podman)
export CONTAINERS_CONF ?= $(CURDIR)/scripts/containers.conf
endif

.DEFAULT_GOAL := binaries
.PHONY: help generate lint vet fmt binaries services services-stop services-status test fuzz \
	bench-postgres bench-kafka bench-redis run watch $(addprefix run-,$(PLUGINS)) \
	build build-debug $(PLUGINS) $(addsuffix -debug,$(PLUGINS)) sizes push clean \
	podman tools image-binaries image-base .build-core-timestamp \
	$(addprefix bin/,$(addsuffix -plugin,$(PLUGINS)))

# Targets whose names come from variables are listed for help in "#: name ## text" lines.
help: ## List the targets
	@grep -hE '^(#: [^:]+|[a-zA-Z_.%-]+):.*## ' $(MAKEFILE_LIST) | sed 's/^#: //' | \
		awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

generate: ## Regenerate Go code from proto/ (committed under gen/)
	bash scripts/generate.sh

binaries: ## Build static bin/<name>-plugin binaries (CGO_ENABLED=0, with dev backends) and bin/prism-watcher
	@GO=$(GO) GO_TAGS='$(GO_TAGS)' LDFLAGS='$(LDFLAGS)' bash scripts/build.sh bin $(PLUGINS)
	@echo "go build bin/prism-watcher"
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/prism-watcher ./watcher

#: bin/<name>-plugin: ## Build one plugin binary, e.g. make bin/redis-plugin
$(addprefix bin/,$(addsuffix -plugin,$(PLUGINS))): bin/%-plugin:
	@GO=$(GO) GO_TAGS='$(GO_TAGS)' LDFLAGS='$(LDFLAGS)' bash scripts/build.sh bin $*

image-binaries: ## Build bin/image/<name>-plugin for the offline images (-tags nodev: no dev backends)
	@GO=$(GO) GO_TAGS='$(IMAGE_GO_TAGS)' LDFLAGS='$(LDFLAGS)' bash scripts/build.sh bin/image $(PLUGINS)

tools: ## Build the pinned grpcurl and grpc-health-probe into bin/ (export PATH="$PWD/bin:$PATH")
	@mkdir -p bin
	$(GO) build -modfile=tools/go.mod -o bin/grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl
	$(GO) build -modfile=tools/go.mod -o bin/grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe

.build-core-timestamp: ## Build the core package (the name the troubleshooting guide uses)
	$(GO) build ./core/...

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

podman: ## Install (if missing) Podman, runc and busybox-static for the images (Debian, root)
	bash scripts/podman.sh install

FAULT_SUMMARY := .cache/faulttest-summary.txt
test: services podman ## The test command: services, Podman, go test -race over every package (fault suite included), brief fuzzing
	@mkdir -p .cache && rm -f $(FAULT_SUMMARY)
	PRISM_FAULTTEST_SUMMARY=$(CURDIR)/$(FAULT_SUMMARY) $(GO) test -race -count=1 -timeout 30m ./...
	@cat $(FAULT_SUMMARY)
	$(MAKE) --no-print-directory fuzz

fuzz: ## Run every go test -fuzz target briefly (FUZZTIME=10s each)
	bash scripts/fuzz.sh

vet: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

fmt: ## Format all Go code
	gofmt -w $$(git ls-files '*.go')

lint: vet ## vet + shellcheck + buf lint + golangci-lint + the full generated-code check (compiles buf)
	bash scripts/shellcheck.sh
	bash scripts/buf-lint.sh
	$(GO) test -count=1 -tags regen -run TestGeneratedCodeIsCurrent ./gen/
	$(TOOL) golangci-lint run ./...

bench-postgres: services ## KeyValue benchmark: plugin vs direct pgx
	$(GO) run ./postgres/bench

bench-kafka: services ## Stream benchmark: plugin vs direct franz-go
	$(GO) run ./kafka/bench

bench-redis: services ## Cache benchmark: plugin vs direct go-redis
	$(GO) run ./redis/bench

run: binaries ## All three plugins in dev mode (embedded backends) on 9090-9092; Ctrl-C stops
	bash scripts/run-dev.sh

run-postgres: bin/postgres-plugin ## Run the postgres plugin against the local test PostgreSQL
	DATABASE_URL=$${DATABASE_URL:-postgres://prism:prism@127.0.0.1:5432/prism} bin/postgres-plugin --config postgres/config.yaml

run-kafka: bin/kafka-plugin ## Run the kafka plugin against the local test Kafka (SCRAM listener)
	KAFKA_BROKERS=$${KAFKA_BROKERS:-127.0.0.1:29093} KAFKA_SASL_USERNAME=$${KAFKA_SASL_USERNAME:-prism} \
	KAFKA_SASL_PASSWORD=$${KAFKA_SASL_PASSWORD:-prism} bin/kafka-plugin --config kafka/config.yaml

run-redis: bin/redis-plugin ## Run the redis plugin against the local test Redis (ACL user)
	REDIS_ADDRESS=$${REDIS_ADDRESS:-127.0.0.1:6379} REDIS_USERNAME=$${REDIS_USERNAME:-prism} \
	REDIS_PASSWORD=$${REDIS_PASSWORD:-prism} bin/redis-plugin --config redis/config.yaml

# Container images (Podman by default; CONTAINER_ENGINE=docker works too); see IMAGE_SOURCE above.
build: $(PLUGINS) ## Build all production images
build-debug: $(addsuffix -debug,$(PLUGINS)) ## Build all debug images (with busybox)

image-base: ## Build the offline base images (FROM scratch; distroless static nonroot layout)
	bash images/rootfs.sh .cache/images
	$(CONTAINER_ENGINE) build $(OFFLINE_FLAGS) -f images/base.Dockerfile --target static-nonroot \
		-t $(BASE_IMAGE) .cache/images
	$(CONTAINER_ENGINE) build $(OFFLINE_FLAGS) -f images/base.Dockerfile --target debug-nonroot \
		-t $(DEBUG_BASE_IMAGE) .cache/images

# Several plugin images in one make run build the prerequisites once.
#: postgres kafka redis: ## Build one production image, e.g. make postgres
$(PLUGINS): $(IMAGE_PREREQS)
	$(CONTAINER_ENGINE) build -f $@/Dockerfile --target prod $(IMAGE_BUILD_ARGS) \
		-t $(REGISTRY)/$@-plugin:$(VERSION) -t $(REGISTRY)/$@-plugin:latest .

#: <name>-debug: ## Build one debug image, e.g. make kafka-debug
$(addsuffix -debug,$(PLUGINS)): $(IMAGE_PREREQS)
	$(CONTAINER_ENGINE) build -f $(@:-debug=)/Dockerfile --target debug $(IMAGE_BUILD_ARGS) \
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
