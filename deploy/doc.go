// Package deploy holds no code: the folder is the project's shell scripts
// (run.sh, add-node.sh, with-deps.sh, ...), and its tests run them the way a
// user does, with data folders and ports of their own, and check what they
// leave behind. It also holds the files to deploy the cluster on many
// machines (systemd/, compose/, k8s/, Dockerfile), which files_test.go
// holds to what the binaries read and the platforms need.
package deploy
