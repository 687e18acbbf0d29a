// Package web serves the browser pages of the chat cluster from files
// embedded in the binary: the chat client at "/" and the cluster status
// page at "/status", with their scripts and styles under "/static/".
//
// The pages are plain HTML, CSS and JavaScript modules: nothing is built at
// run time and nothing is fetched from elsewhere. The chat client talks to
// the gateway's API on the same origin and holds a WebSocket to a chat node
// on another port; the status page polls GET /api/cluster.
package web
