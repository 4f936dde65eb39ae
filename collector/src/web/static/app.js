// groundtruth web UI: live refresh. The collector sends a `batch` server-sent event after every
// committed batch; the page then re-fetches itself and swaps in the new <main>. No framework.
(function () {
  'use strict';
  var main = document.getElementById('live');
  var status = document.getElementById('live-status');
  if (!main || main.getAttribute('data-live') !== '1' || !window.EventSource) return;
  var pending = null;
  function say(text) { if (status) status.textContent = text; }
  function refresh() {
    pending = null;
    // Do not pull the form out from under someone typing in it.
    var a = document.activeElement;
    if (a && main.contains(a) && (a.tagName === 'INPUT' || a.tagName === 'TEXTAREA')) return;
    fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('live');
        if (!fresh) return;
        main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
        document.body.setAttribute('data-refreshed', String(Date.now()));
        say('live · updated ' + new Date().toLocaleTimeString());
      })
      .catch(function () { say('refresh failed; retrying on the next batch'); });
  }
  var es = new EventSource('/events');
  es.addEventListener('open', function () { say('live'); });
  es.addEventListener('error', function () { say('reconnecting…'); });
  es.addEventListener('batch', function () {
    // At most one refresh a second however many agents deliver.
    if (pending === null) pending = setTimeout(refresh, 1000);
  });
})();
