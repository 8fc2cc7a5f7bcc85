/* conductor_django admin: pages that keep themselves up to date, without a framework.
 *
 * - An element with data-cdj-live="<json url>" (the execution page): the JSON is polled
 *   every data-cdj-interval ms; when its "version" differs from data-cdj-version the
 *   page is fetched again and the admin's #content (the heading, the object tools and
 *   the form: Django 6.1 puts the object tools beside the heading, outside the form's
 *   block) patched from its new copy. Polling stops once the execution is finished.
 * - An element with data-cdj-refresh="<seconds>" (the dashboard): replaced by its copy
 *   from the page fetched again every that many seconds.
 * Nothing is replaced while the user types in a form inside the element, nor polled
 * while the tab is hidden. List cells cut by CSS get their full text as a title.
 */
(function () {
  "use strict";

  function busy(region) {
    var active = document.activeElement;
    return active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)
      && active.type !== "submit";
  }

  // The markup of a part, without what differs on every render (CSRF tokens).
  function markup(node) {
    return node.outerHTML.replace(/name="csrfmiddlewaretoken" value="[^"]*"/g, "");
  }

  // Containers patched part by part rather than replaced whole.
  var NESTED = ["content-main", "cdj-live-region"];

  // Replace only the parts of old that changed (the same parts, by position), so that
  // what did not change (a form being filled in, a scrolled box) stays as it is.
  function patch(old, fresh) {
    var a = old.children, b = fresh.children;
    if (a.length !== b.length || a.length === 0) {
      old.replaceWith(document.importNode(fresh, true));
      return;
    }
    for (var i = b.length - 1; i >= 0; i--) {
      if (markup(a[i]) === markup(b[i])) { continue; }
      if (a[i].tagName === b[i].tagName && a[i].id === b[i].id && a[i].children.length
          && NESTED.indexOf(a[i].id) >= 0) {
        patch(a[i], b[i]);
      } else {
        a[i].replaceWith(document.importNode(b[i], true));
      }
    }
    var attrs = fresh.attributes;
    for (var j = 0; j < attrs.length; j++) { old.setAttribute(attrs[j].name, attrs[j].value); }
    ["data-cdj-live", "data-cdj-version", "data-cdj-refresh"].forEach(function (name) {
      if (!fresh.hasAttribute(name)) { old.removeAttribute(name); }
    });
  }

  function swap(region) {
    return fetch(window.location.href, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = region.id ? doc.getElementById(region.id) : null;
        if (fresh) { patch(region, fresh); }
        return document.getElementById(region.id) || region;
      });
  }

  // marker: the element with data-cdj-live; what is redrawn is the admin's #content
  // around it (or the marker itself on a page without one).
  function pollExecution(marker) {
    var interval = parseInt(marker.getAttribute("data-cdj-interval"), 10) || 2000;
    var url = marker.getAttribute("data-cdj-live");
    var region = document.getElementById("content") || marker;
    function tick() {
      if (document.hidden) { return setTimeout(tick, interval); }
      fetch(url, {credentials: "same-origin", cache: "no-store"})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (state) {
          if (state.version === marker.getAttribute("data-cdj-version")) {
            return setTimeout(tick, interval);
          }
          if (busy(region)) { return setTimeout(tick, interval); }
          return swap(region).then(function (copy) {
            region = copy;
            marker = document.querySelector("[data-cdj-live]");
            if (marker) { setTimeout(tick, interval); }  // none: the execution finished
          });
        })
        .catch(function () { setTimeout(tick, interval * 5); });
    }
    setTimeout(tick, interval);
  }

  function refreshEvery(region) {
    var ms = (parseInt(region.getAttribute("data-cdj-refresh"), 10) || 10) * 1000;
    function tick() {
      if (document.hidden || busy(region)) { return setTimeout(tick, ms); }
      swap(region).then(function (copy) { region = copy; setTimeout(tick, ms); },
                        function () { setTimeout(tick, ms * 3); });
    }
    setTimeout(tick, ms);
  }

  function titleCutCells() {
    var cells = document.querySelectorAll("#result_list td, #result_list th");
    for (var i = 0; i < cells.length; i++) {
      var cell = cells[i];
      if (!cell.title && cell.scrollWidth > cell.clientWidth && !cell.querySelector("[title]")) {
        cell.title = cell.textContent.trim();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-cdj-live]");
    if (live) { pollExecution(live); }
    var refreshed = document.querySelector("[data-cdj-refresh]");
    if (refreshed) { refreshEvery(refreshed); }
    titleCutCells();
  });
})();
