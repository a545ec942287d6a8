/* Ferrydesk website widget. Embed with:
 *   <script src="https://desk.example.com/widget.js" data-key="CHANNEL_PUBLIC_KEY" async></script>
 * The visitor's identity persists in localStorage; replies arrive live over a WebSocket.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector('script[data-key][src*="widget.js"]');
  if (!script) return;
  var key = script.getAttribute("data-key");
  var base = new URL(script.src, location.href).origin;
  var storeKey = "ferrydesk:" + key;
  var state = { token: null, messages: [], seen: {}, ws: null, retry: 500, open: false };

  var host = document.createElement("div");
  host.id = "ferrydesk-widget";
  document.body.appendChild(host);
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  root.innerHTML =
    '<style>' +
    ':host{all:initial}' +
    '.btn{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:#1f6feb;color:#fff;display:flex;align-items:center;justify-content:center;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000}' +
    '.panel{position:fixed;right:20px;bottom:88px;width:340px;max-width:calc(100vw - 40px);height:460px;max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);display:none;flex-direction:column;font:14px/1.4 system-ui,sans-serif;color:#1d2430;z-index:2147483000;overflow:hidden}' +
    '.panel.open{display:flex}' +
    '.head{background:#1f6feb;color:#fff;padding:12px 14px;font-weight:600}' +
    '.log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px;background:#f6f8fa}' +
    '.m{max-width:80%;padding:7px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}' +
    '.in{align-self:flex-end;background:#1f6feb;color:#fff}' +
    '.out{align-self:flex-start;background:#fff;border:1px solid #d0d7de}' +
    '.who{font-size:11px;opacity:.7;margin-bottom:2px}' +
    '.m img{max-width:100%;border-radius:6px;display:block;margin-top:4px}' +
    '.m a{color:inherit}' +
    '.note{align-self:center;font-size:12px;color:#57606a}' +
    '.bar{display:flex;gap:6px;padding:8px;border-top:1px solid #d0d7de}' +
    '.bar textarea{flex:1;resize:none;height:38px;padding:8px;border:1px solid #d0d7de;border-radius:8px;font:inherit}' +
    '.bar button{border:0;border-radius:8px;background:#1f6feb;color:#fff;padding:0 12px;cursor:pointer;font:inherit}' +
    '.bar label{display:flex;align-items:center;cursor:pointer;padding:0 4px;font-size:18px}' +
    '.err{color:#cf222e;font-size:12px;padding:0 10px 6px}' +
    '</style>' +
    '<button class="btn" data-testid="fd-open" aria-label="Chat"><svg width="26" height="26" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"/></svg></button>' +
    '<div class="panel" role="dialog" aria-label="Chat">' +
    '<div class="head" data-testid="fd-title">Chat</div>' +
    '<div class="log" data-testid="fd-log" aria-live="polite"></div>' +
    '<div class="err" data-testid="fd-error"></div>' +
    '<div class="bar"><label title="Attach a file"><svg width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="#57606a" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48"/></svg><input type="file" data-testid="fd-file" hidden></label>' +
    '<textarea data-testid="fd-input" placeholder="Type a message…" aria-label="Message"></textarea>' +
    '<button data-testid="fd-send">Send</button></div></div>';

  var $ = function (s) { return root.querySelector(s); };
  var log = $(".log"), input = $("textarea"), panel = $(".panel"), errBox = $(".err");

  // A POST carries an Idempotency-Key (one per call, as one call is one visitor action, unless
  // the caller passes one) and is sent again with that same key while its outcome is unknown:
  // the network failed, the server was briefly unavailable (502, 503, 504) or still working on
  // the first try (409 idempotency_key_in_flight). The server answers a repeated key with the first answer, so a
  // retry never writes twice. It waits Retry-After seconds (1 s without one, at most 10 s), at
  // most 3 times; any other answer is final.
  function api(path, opts, key) {
    opts = opts || {};
    var method = opts.method || "GET";
    var idem = method === "GET" ? null : key || uuid();
    var once = function (retry) {
      var headers = {};
      for (var h in opts.headers || {}) headers[h] = opts.headers[h];
      if (state.token) headers["Authorization"] = "Bearer " + state.token;
      if (idem) headers["Idempotency-Key"] = idem;
      var again = function (seconds) {
        return new Promise(function (r) { setTimeout(r, seconds * 1000); }).then(function () { return once(retry + 1); });
      };
      // A string or FormData body can be sent again as it is.
      return fetch(base + "/widget/v1" + path, { method: method, headers: headers, body: opts.body }).then(function (r) {
        return r.text().then(function (t) {
          var body = null;
          try { body = t ? JSON.parse(t) : null; } catch (e) { /* a proxy's HTML error page */ }
          var unknown = r.status === 502 || r.status === 503 || r.status === 504 ||
            (r.status === 409 && body && body.code === "idempotency_key_in_flight");
          if (idem && unknown && retry < 3) {
            var after = parseFloat(r.headers.get("Retry-After"));
            return again(after >= 0 ? Math.min(after, 10) : 1);
          }
          // The session ended (idle too long, or the server forgot it): the next action starts
          // a new one.
          if (r.status === 401 && path !== "/sessions") forget();
          if (!r.ok) {
            var err = new Error((body && body.message) || ("HTTP " + r.status));
            err.status = r.status;
            throw err;
          }
          return body;
        });
      }, function (e) {
        // A TypeError is a network failure (or a refused CORS answer).
        if (idem && e instanceof TypeError && retry < 3) return again(1);
        throw e;
      });
    };
    return once(0);
  }

  function forget() {
    localStorage.removeItem(storeKey);
    state.token = null;
    starting = null;
    var ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
  }

  // crypto.randomUUID exists only on secure origins and newer browsers; getRandomValues is older.
  function uuid() {
    var c = window.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    if (c && c.getRandomValues) {
      var b = c.getRandomValues(new Uint8Array(16)), hex = "";
      b[6] = (b[6] & 0x0f) | 0x40; // version 4
      b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
      for (var i = 0; i < b.length; i++) hex += (b[i] < 16 ? "0" : "") + b[i].toString(16);
      return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
    }
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function render(m) {
    if (state.seen[m.id]) return;
    state.seen[m.id] = true;
    var div = document.createElement("div");
    div.className = "m " + (m.direction === "inbound" ? "in" : "out");
    div.setAttribute("data-testid", m.direction === "inbound" ? "fd-msg-in" : "fd-msg-out");
    if (m.direction === "outbound" && m.author_name) {
      var who = document.createElement("div");
      who.className = "who";
      who.textContent = m.author_name;
      div.appendChild(who);
    }
    var text = document.createElement("div");
    text.textContent = m.body;
    div.appendChild(text);
    (m.attachments || []).forEach(function (a) {
      var url = base + "/widget/v1/files/" + encodeURIComponent(a.id) + "?token=" + encodeURIComponent(state.token);
      if (/^image\//.test(a.content_type)) {
        var img = document.createElement("img");
        img.src = url;
        img.alt = a.filename;
        div.appendChild(img);
      } else {
        var link = document.createElement("a");
        link.href = url;
        link.textContent = a.filename;
        link.target = "_blank";
        div.appendChild(link);
      }
    });
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
  }

  function note(text) {
    var d = document.createElement("div");
    d.className = "note";
    d.textContent = text;
    log.appendChild(d);
    log.scrollTop = log.scrollHeight;
  }

  function connect() {
    var url = base.replace(/^http/, "ws") + "/widget/v1/ws?token=" + encodeURIComponent(state.token);
    var ws = new WebSocket(url);
    state.ws = ws;
    // Whatever arrived between the transcript load and this subscription (or while the socket
    // was down) comes with a reload; render() skips what is already shown.
    ws.onopen = function () { state.retry = 500; load().catch(function () {}); };
    ws.onmessage = function (e) {
      var ev = JSON.parse(e.data);
      if (ev.type === "message_created") render(ev.message);
      else if (ev.type === "chat_finished") note("The operator has finished the chat. Write again any time.");
      else if (ev.type === "resync") load();
    };
    ws.onclose = function () {
      if (state.ws !== ws) return;
      // Reload first: a 401 means the session ended (forget() then stops reconnecting).
      setTimeout(function () {
        if (state.ws !== ws) return;
        load().then(connect, function () { if (state.ws === ws) connect(); });
      }, state.retry);
      state.retry = Math.min(state.retry * 2, 15000);
    };
  }

  function load() {
    return api("/messages").then(function (msgs) { msgs.forEach(render); });
  }

  function start() {
    var saved = localStorage.getItem(storeKey);
    var ready = saved
      ? Promise.resolve(JSON.parse(saved))
      : api("/sessions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: key }) })
          .then(function (s) { localStorage.setItem(storeKey, JSON.stringify(s)); return s; });
    return ready.then(function (s) {
      state.token = s.token;
      if (s.settings && s.settings.title) $(".head").textContent = s.settings.title;
      else if (s.channel_name) $(".head").textContent = s.channel_name;
      return load().catch(function (e) {
        // A stale token (e.g. the server's database was reset): start over.
        if (saved) { localStorage.removeItem(storeKey); state.token = null; return start(); }
        throw e;
      });
    }).then(function () { if (!state.ws) connect(); });
  }

  var starting = null;
  function ensure() { return starting || (starting = start().catch(function (e) { starting = null; throw e; })); }

  function send(text, files) {
    var body = JSON.stringify({ text: text, client_id: uuid(), files: files || [] });
    var idem = uuid();
    var post = function () { return api("/messages", { method: "POST", headers: { "Content-Type": "application/json" }, body: body }, idem); };
    errBox.textContent = "";
    return ensure().then(post).catch(function (e) {
      // The session ended (api() forgot it): send once more in a new one.
      if (e.status === 401) return ensure().then(post);
      throw e;
    }).then(load).catch(function (e) {
      errBox.textContent = "Not sent: " + e.message;
      if (text) input.value = text;
    });
  }

  $(".btn").addEventListener("click", function () {
    state.open = !state.open;
    panel.classList.toggle("open", state.open);
    if (state.open) { ensure().catch(function (e) { errBox.textContent = e.message; }); input.focus(); }
  });
  $("button[data-testid=fd-send]").addEventListener("click", function () {
    var t = input.value.trim();
    if (!t) return;
    input.value = "";
    send(t);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("button[data-testid=fd-send]").click(); }
  });
  $("input[type=file]").addEventListener("change", function (e) {
    var f = e.target.files[0];
    if (!f) return;
    var fd = new FormData();
    fd.append("file", f, f.name);
    ensure().then(function () { return api("/files", { method: "POST", body: fd }); })
      .then(function (a) { return send("", [a.id]); })
      .catch(function (err) { errBox.textContent = "File not sent: " + err.message; });
    e.target.value = "";
  });

  window.FerrydeskWidget = { open: function () { if (!state.open) $(".btn").click(); }, send: send };
})();
