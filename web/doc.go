// Package web serves the browser pages of the chat cluster from files
// embedded in the binary: the chat client at "/" (with the customer-service
// console for users who are agents), the cluster status page at "/status"
// and the visitors' customer-service page at "/support", with their
// scripts and styles under "/static/".
//
// The pages are plain HTML, CSS and JavaScript modules: nothing is built at
// run time and nothing is fetched from elsewhere. The chat client talks to
// the gateway's API on the same origin and holds a WebSocket to a chat node
// on another port; the status page polls GET /api/cluster; the support page
// makes a visitor with POST /api/visitor and talks to a node as the chat
// client does.
package web
