// GPUScout's service worker: shows an alert that arrives by Web Push while no dashboard tab is
// open (or while it is in the background), and opens or focuses the dashboard when the
// notification is clicked. The push payload is the alert JSON of alerts:#<uid>.
/* eslint-env serviceworker */

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/** The alert a push carries, or a plain one when the payload is not JSON. */
function alertOf(data) {
  if (!data) return {};
  try {
    return data.json();
  } catch {
    return { message: data.text() };
  }
}

self.addEventListener('push', (event) => {
  const alert = alertOf(event.data);
  const title = alert.rule_name ? `GPUScout: ${alert.rule_name}` : 'GPUScout alert';
  const body = typeof alert.message === 'string' ? alert.message : 'A market alert fired.';
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      // One notification per fired alert: the socket and a push of the same alert replace each other.
      tag: `gpuscout-${alert.id || Date.now()}`,
      data: { url: '/#past-panel', id: alert.id || null },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const target = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).origin === target.origin);
      if (open) {
        await open.focus();
        return;
      }
      await self.clients.openWindow(target.href);
    })(),
  );
});
