// Package deploy holds no code: the folder is the project's shell scripts
// (run.sh, add-node.sh, with-deps.sh, ...), and its tests run them the way a
// user does, with data folders and ports of their own, and check what they
// leave behind.
package deploy
