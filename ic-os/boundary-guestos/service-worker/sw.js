// The service worker of the Boundary-guestOS HTTP gateway (dev and dev-sev serve this file as it is
// in the repository; prod and prod-sev serve the pinned npm package's bundle in its place).
// It answers requests for the gateway's own pages from a cache filled at install, and passes
// everything else to the network unchanged.
const CACHE = "icos-gateway-v1";
const PAGES = ["/", "/index.html"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(PAGES)));
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys().then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
  );
  self.clients.claim();
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !PAGES.includes(url.pathname)) {
    return;
  }
  event.respondWith(caches.match(event.request).then((cached) => cached || fetch(event.request)));
});
