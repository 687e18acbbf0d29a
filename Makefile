# The chat cluster. `make run` starts a whole cluster on this machine,
# `make test` runs the suite against real ZooKeeper, Redis and MongoDB-wire
# servers it starts for the purpose. See deploy/*.sh for the details.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go

.PHONY: all run build test check install clean chaos bench

all: build

run:
	deploy/run.sh

install:
	deploy/install.sh

build:
	$(GO) build -o bin/node ./cmd/node
	$(GO) build -o bin/gateway ./cmd/gateway
	$(GO) build -o bin/chat ./cmd/chat
	cd deploy/mongostore && $(GO) build -tags ferretdb_no_postgresql -o ../../bin/mongostore .

# check: formatting, vet and tidy module files, in both modules. `go mod
# tidy -diff` changes nothing; it prints what `go mod tidy` would change
# (it may download modules the first time: dependencies' tests count too).
check:
	@unformatted="$$(gofmt -l .)"; \
	if [[ -n "$$unformatted" ]]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...
	cd deploy/mongostore && $(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run 'go mod tidy'"; exit 1; }
	@cd deploy/mongostore && { $(GO) mod tidy -diff || { echo "deploy/mongostore: go.mod or go.sum is not tidy: run 'go mod tidy' there"; exit 1; }; }

# The suite runs against dependencies of its own: a ZooKeeper, a 3-server
# ZooKeeper ensemble, Redis and mongostore on free ports (deploy/with-deps.sh).
# CHAT_TEST_NETNS=1 makes the test of nodes in network namespaces of their
# own run (it needs root, as make test has here) or fail: it never skips.
# Then each protocol decoder is fuzzed briefly (-fuzz takes one target a
# run), for a number of inputs rather than a time (a few seconds each on
# two cores): with -fuzztime as a duration, Go before 1.27 can fail the run
# with "context deadline exceeded" as the time runs out, a race in its
# fuzzing coordinator (go.dev/issue/75804), not a finding.
FUZZ_EXECS ?= 50000

# The end-to-end chat and customer-service tests that look at Redis only
# through the cluster run a
# second time, each cluster on a Redis Cluster of its own (three masters,
# CHAT_TEST_REDIS_CLUSTER=1), and the short chaos run a second time over a
# Redis Cluster with replicas whose fault kills a master (CHAT_CHAOS_REDIS).
# The tests left out read or flush keys of the one test Redis directly.
CLUSTER_TESTS := ^(TestChaos|TestBadInput|TestGatewayAPI|TestDirectChatAcrossNodes|TestOfflineDeliveryAndTokenLogin|TestSecondLoginKicksFirst|TestClientMsgIDIsIdempotent|TestLeaderKilledWhileMessagesFlow|TestFourthNodeJoins|TestGracefulStop|TestRoomAcrossNodes|TestRoomSurvivesLeaderKill|TestWordFilterAndPopular|TestMetrics|TestLargeSyncWithLiveTrafficKeepsClient|TestLookalikeUsernames|TestSupportVisitorMeetsAgent|TestSupportRaces)$$
test: install check
	CHAT_TEST_ZK_ENSEMBLE=1 CHAT_TEST_NETNS=1 deploy/with-deps.sh $(GO) test -race -count=1 -timeout 30m ./...
	CHAT_TEST_ZK_ENSEMBLE=1 CHAT_TEST_REDIS_CLUSTER=1 CHAT_CHAOS_REDIS=cluster deploy/with-deps.sh $(GO) test -race -count=1 -timeout 20m -run '$(CLUSTER_TESTS)' ./e2e/ ./chaos/
	cd deploy/mongostore && $(GO) test -count=1 ./...
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime=$(FUZZ_EXECS)x ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePeer$$' -fuzztime=$(FUZZ_EXECS)x ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzMessageEncoding$$' -fuzztime=$(FUZZ_EXECS)x ./protocol/

# chaos: the long chaos run (chaos/): clients chat over three nodes while
# every kind of fault is injected 20 times; it fails on any message lost,
# shown twice or out of order. `make test` includes a short run (one of each).
# CHAT_CHAOS_REDIS=sentinel runs it over Redis with Sentinel, =cluster over a
# Redis Cluster with replicas; the cluster runs under the multi login policy
# with some users on two devices, CHAT_CHAOS_LOGIN=single under single
# (chaos/doc.go).
chaos: install
	CHAT_TEST_ZK_ENSEMBLE=1 CHAT_CHAOS_ROUNDS=$${CHAT_CHAOS_ROUNDS:-20} deploy/with-deps.sh $(GO) test -race -count=1 -run '^TestChaos$$' -v -timeout 80m ./chaos/

# bench: the standard load set (cmd/chatbench: dm, room, connect, and last
# failover, which kills the leader) against a private cluster on its own
# ports and data folder, each scenario beside the baseline relay; writes
# docs/benchmarks.md. About ten minutes.
bench: install
	deploy/bench.sh

clean:
	rm -rf bin .cache
