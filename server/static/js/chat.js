/*! chat.js: the chat pages (/chat/, /userchat/, /groupchat/) on top of wsredis.js.
 *
 * Everything the page needs comes from data-* attributes of #chat (no inline script, so the
 * pages can forbid inline scripts in their Content-Security-Policy):
 *   data-ws-prefix, data-facility, data-flags, data-heartbeat: the websocket to open;
 *   data-send: "socket" (broadcast: send on the websocket) or the URL to POST to;
 *   data-target: the form field naming the recipient ("user" or "group"), with #target;
 *   data-username: who is typing (shown in front of broadcast messages);
 *   data-csrf: the CSRF token for POSTs.
 * #online's data-presence is the presence API of the facility (empty: no presence). The page
 * lists the users of every channel it may see (GET /api/presence answers a session with its
 * own audiences only, and anonymous visitors with 403): read when the socket (re)connects,
 * again right after each presence/join/leave frame on the socket (so joins and leaves show at
 * once), and every PRESENCE_POLL_MS for what the socket does not hear about (channels it does
 * not subscribe to, anonymous visitors).
 * Messages and names are added as text, never as HTML.
 */
(function () {
  'use strict';
  var chat = document.getElementById('chat');
  if (!chat) { return; }
  var d = chat.dataset;
  var billboard = document.getElementById('billboard');
  var status = document.getElementById('status');
  var input = document.getElementById('text_message');
  var button = document.getElementById('send_message');
  var target = document.getElementById('target');
  var feedback = document.getElementById('feedback');

  function show(state, text) {
    status.textContent = text;
    status.className = 'status ' + state;
    chat.setAttribute('data-state', state);
  }

  function append(text, kind) {
    var line = document.createElement('div');
    line.className = kind ? 'message ' + kind : 'message';
    line.textContent = text;
    billboard.appendChild(line);
    billboard.scrollTop = billboard.scrollHeight;
  }

  function say(text, ok) {
    if (!feedback) { return; }
    feedback.textContent = text;
    feedback.className = ok ? 'feedback ok' : 'feedback error';
  }

  var PRESENCE_POLL_MS = 10000;
  /** Frames arriving together (a snapshot per channel) cause one read. */
  var PRESENCE_DEBOUNCE_MS = 100;
  var online = document.getElementById('online');
  var onlineUsers = document.getElementById('online_users');
  var onlineNote = document.getElementById('online_note');
  var polling = null;
  var pending = null;

  function showOnline(channels) {
    var names = {};
    var anonymous = 0;
    Object.keys(channels).forEach(function (label) {
      (channels[label].users || []).forEach(function (u) { names[u] = true; });
      if (label === 'broadcast') { anonymous = channels[label].anonymous || 0; }
    });
    var sorted = Object.keys(names).sort();
    var items = sorted.map(function (u) {
      var li = document.createElement('li');
      li.textContent = u;
      li.setAttribute('data-user', u);
      return li;
    });
    onlineUsers.replaceChildren.apply(onlineUsers, items);
    onlineNote.textContent = anonymous ? '+ ' + anonymous + ' anonymous' : '';
    online.setAttribute('data-count', String(sorted.length));
  }

  function pollOnline() {
    if (!online || !online.dataset.presence) { return; }
    fetch(online.dataset.presence, { credentials: 'same-origin' }).then(function (resp) {
      if (resp.status === 403) {
        onlineUsers.replaceChildren();
        onlineNote.textContent = 'Log in to see who is online.';
        return null;
      }
      return resp.ok ? resp.json() : null;
    }).then(function (body) {
      if (body && body.channels) { showOnline(body.channels); }
    }, function () { /* offline: keep the last list */ });
  }

  function presenceFrame(frame) {
    if (!frame || ['presence', 'join', 'leave'].indexOf(frame.type) === -1) { return; }
    if (pending) { return; }
    pending = window.setTimeout(function () {
      pending = null;
      pollOnline();
    }, PRESENCE_DEBOUNCE_MS);
  }

  if (online && !online.dataset.presence) {
    online.hidden = true;
  } else if (online) {
    polling = window.setInterval(pollOnline, PRESENCE_POLL_MS);
  }

  var ws = WSRedis({
    uri: WSRedis.uri(d.wsPrefix, d.facility, d.flags),
    heartbeat_msg: d.heartbeat || null,
    connecting: function () { show('connecting', 'connecting…'); },
    connected: function () { show('connected', 'connected'); pollOnline(); },
    receive_message: function (data) { append(typeof data === 'string' ? data : '[binary message]'); },
    disconnected: function () { show('disconnected', 'disconnected, reconnecting…'); },
    // Missed messages come back on reconnect; when the server's history cannot fill the gap,
    // say so instead of showing a conversation with a silent hole in it.
    envelope: true,
    onEvent: presenceFrame,
    onRecoveryFailed: function () {
      append('Some messages sent while you were disconnected could not be recovered.', 'notice');
    }
  });

  function post(message) {
    var form = new URLSearchParams();
    form.set(d.target, target.value);
    form.set('message', message);
    form.set('csrfmiddlewaretoken', d.csrf);
    return fetch(d.send, {
      method: 'POST',
      body: form,
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': d.csrf }
    }).then(function (resp) {
      return resp.text().then(function (body) {
        if (!resp.ok) { throw new Error(body || resp.statusText); }
        return body;
      });
    });
  }

  function send() {
    var text = input.value.trim();
    if (!text) { return; }
    if (d.send === 'socket') {
      var who = d.username || 'anonymous';
      if (ws.send_message(who + ': ' + text)) {
        input.value = '';
      } else {
        say('not connected: message not sent', false);
      }
      return;
    }
    if (!target || !target.value) {
      say('choose a recipient first', false);
      return;
    }
    var to = target.options[target.selectedIndex].text;
    post(text).then(function () {
      input.value = '';
      say('sent to ' + to, true);
    }, function (e) {
      say('not sent: ' + e.message, false);
    });
  }

  button.addEventListener('click', send);
  input.addEventListener('keydown', function (evt) {
    if (evt.key === 'Enter') {
      evt.preventDefault();
      send();
    }
  });
  window.addEventListener('pagehide', function () {
    if (polling) { window.clearInterval(polling); }
    ws.close();
  });
}());
