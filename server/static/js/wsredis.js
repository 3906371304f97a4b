/*! wsredis.js: a dependency-free websocket client for wsredis (and django-websocket-redis).
 *
 * var ws = WSRedis({
 *   uri: WSRedis.uri('/ws/', 'chat', 'subscribe-broadcast&publish-broadcast&echo'),
 *   heartbeat_msg: '--heartbeat--',      // the server's --heartbeat string, or null
 *   connecting: function () {},          // before each connection attempt
 *   connected: function () {},           // the socket is open
 *   receive_message: function (data) {}, // every message except heartbeats
 *   disconnected: function (evt) {}      // the socket closed (a reconnect follows)
 * });
 * ws.send_message('hello'); ws.close();
 *
 * History and recovery (docs/protocol.md): with `envelope: true` the client offers the
 * websocket subprotocol wsredis.v1. Every frame is then a JSON envelope; receive_message still
 * gets the body (and the envelope as a second argument). The client keeps the last position
 * (epoch, offset) it saw per channel and, on every reconnect, asks the server for what it missed
 * (`recover=` in the URL), which arrives, in order and exactly once, before live messages.
 * Where the history cannot fill the gap (trimmed, expired, Redis restarted empty), the server
 * says so and onRecoveryFailed({ch, epoch, offset}) is called: reload the page's state there.
 *   envelope: true,
 *   onRecoveryFailed: function (info) {}, // a gap could not be filled for info.ch
 *   onRecovered: function (info) {},      // info.count missed messages were delivered
 *   onEvent: function (frame) {}          // other envelope frames (presence, join, leave)
 * A server without wsredis.v1 answers without it, and the client falls back to plain frames.
 *
 * Reconnects after any close except ws.close(), waiting a random delay up to
 * min(30 s, 1 s * 2^attempt) ("full jitter"), so a restarted server is not hit by every
 * browser at once. With heartbeat_msg set, it sends the heartbeat every heartbeat_interval ms
 * and reconnects when nothing (no heartbeat, no message) arrived for max_missed_heartbeats
 * intervals: the connection is dead even if the browser has not noticed.
 * The options of ws4redis.js are accepted unchanged; WS4Redis is an alias.
 */
(function (global) {
  'use strict';

  var DEFAULTS = {
    uri: null,
    heartbeat_msg: null,
    heartbeat_interval: 5000,
    max_missed_heartbeats: 3,
    backoff_base: 1000,
    backoff_max: 30000,
    connecting: null,
    connected: null,
    receive_message: null,
    disconnected: null,
    envelope: false,
    onRecoveryFailed: null,
    onRecovered: null,
    onEvent: null
  };
  var SUBPROTOCOL = 'wsredis.v1';

  function WSRedis(options) {
    if (!(this instanceof WSRedis)) {
      return new WSRedis(options);
    }
    var opts = {};
    var key;
    for (key in DEFAULTS) {
      if (Object.prototype.hasOwnProperty.call(DEFAULTS, key)) {
        opts[key] = DEFAULTS[key];
      }
    }
    for (key in options || {}) {
      if (Object.prototype.hasOwnProperty.call(options, key)) {
        opts[key] = options[key];
      }
    }
    if (!opts.uri) {
      throw new Error('No Websocket URI in options');
    }
    if (opts.heartbeat_msg === '') {
      opts.heartbeat_msg = null;
    }

    var self = this;
    var ws = null;
    var attempts = 0;
    var reconnect_timer = null;
    var heartbeat_timer = null;
    var last_seen = 0;
    var must_reconnect = true;

    // Last position seen per channel label: {ch: {epoch: E, offset: N}}.
    var positions = {};

    function call(name, arg, extra) {
      if (typeof opts[name] === 'function') {
        try {
          opts[name](arg, extra);
        } catch (e) {
          if (global.console) { global.console.error(e); }
        }
      }
    }

    function stop_heartbeat() {
      if (heartbeat_timer !== null) {
        global.clearInterval(heartbeat_timer);
        heartbeat_timer = null;
      }
    }

    function start_heartbeat() {
      stop_heartbeat();
      if (opts.heartbeat_msg === null) { return; }
      last_seen = Date.now();
      heartbeat_timer = global.setInterval(function () {
        var silent = Date.now() - last_seen;
        if (silent > opts.heartbeat_interval * opts.max_missed_heartbeats) {
          // Heartbeats stopped: the connection is dead even if the browser has not noticed.
          stop_heartbeat();
          if (ws) { ws.close(4000, 'heartbeat timeout'); on_close({ code: 4000, reason: 'heartbeat timeout' }); }
          return;
        }
        if (ws && ws.readyState === 1) {
          ws.send(opts.heartbeat_msg);
        }
      }, opts.heartbeat_interval);
    }

    /** The delay before reconnect attempt number `n` (from 0): full jitter, capped. */
    function backoff(n) {
      var ceiling = Math.min(opts.backoff_max, opts.backoff_base * Math.pow(2, Math.min(n, 16)));
      return Math.floor(Math.random() * ceiling);
    }

    function schedule_reconnect() {
      if (!must_reconnect || reconnect_timer !== null) { return; }
      var delay = backoff(attempts);
      attempts += 1;
      reconnect_timer = global.setTimeout(function () {
        reconnect_timer = null;
        connect();
      }, delay);
    }

    function on_close(evt) {
      stop_heartbeat();
      if (ws === null) { return; }
      var old = ws;
      ws = null;
      old.onopen = old.onmessage = old.onclose = old.onerror = null;
      call('disconnected', evt);
      schedule_reconnect();
    }

    /** The URI of the next connection: with the positions to recover, once there are any. */
    function connect_uri() {
      var chs = Object.keys(positions);
      if (!opts.envelope || chs.length === 0) { return opts.uri; }
      var sep = opts.uri.indexOf('?') === -1 ? '?' : '&';
      return opts.uri + sep + 'recover=' + encodeURIComponent(JSON.stringify(positions));
    }

    function remember(frame) {
      if (typeof frame.ch === 'string' && typeof frame.epoch === 'string' &&
          typeof frame.offset === 'number') {
        positions[frame.ch] = { epoch: frame.epoch, offset: frame.offset };
      }
    }

    /** One envelope frame: track its position, then hand it to the page. */
    function on_envelope(data) {
      var frame;
      try {
        frame = JSON.parse(data);
      } catch (e) {
        call('receive_message', data);
        return;
      }
      switch (frame && frame.type) {
        case 'message':
          remember(frame);
          call('receive_message', frame.data, frame);
          break;
        case 'recovered':
          remember(frame);
          call('onRecovered', frame);
          break;
        case 'recovery_failed':
          remember(frame);
          call('onRecoveryFailed', frame);
          break;
        default:
          call('onEvent', frame);
      }
    }

    function connect() {
      call('connecting');
      var sock;
      try {
        sock = opts.envelope
          ? new global.WebSocket(connect_uri(), [SUBPROTOCOL])
          : new global.WebSocket(opts.uri);
      } catch (e) {
        if (global.console) { global.console.error('wsredis: cannot connect to ' + opts.uri, e); }
        schedule_reconnect();
        return;
      }
      ws = sock;
      sock.onopen = function () {
        attempts = 0;
        start_heartbeat();
        call('connected');
      };
      sock.onmessage = function (evt) {
        last_seen = Date.now();
        if (opts.heartbeat_msg !== null && evt.data === opts.heartbeat_msg) { return; }
        if (sock.protocol === SUBPROTOCOL && typeof evt.data === 'string') {
          on_envelope(evt.data);
          return;
        }
        call('receive_message', evt.data);
      };
      sock.onclose = function (evt) {
        if (ws === sock) { on_close(evt); }
      };
      sock.onerror = function () {
        // Always followed by onclose, which reconnects.
      };
    }

    /** Send a message (a string, Blob or ArrayBuffer); false if not connected. */
    self.send_message = function (message) {
      if (ws === null || ws.readyState !== 1) { return false; }
      ws.send(message);
      return true;
    };
    /** Close for good: no reconnect. */
    self.close = function () {
      must_reconnect = false;
      if (reconnect_timer !== null) {
        global.clearTimeout(reconnect_timer);
        reconnect_timer = null;
      }
      stop_heartbeat();
      if (ws !== null) {
        var old = ws;
        ws = null;
        old.onclose = null;
        old.close(1000);
      }
    };
    /** The WebSocket readyState (3, closed, between reconnect attempts). */
    self.get_state = function () { return ws === null ? 3 : ws.readyState; };
    self.is_connecting = function () { return self.get_state() === 0; };
    self.is_connected = function () { return self.get_state() === 1; };
    self.is_closing = function () { return self.get_state() === 2; };
    self.is_closed = function () { return self.get_state() === 3; };
    /** A copy of the last position seen per channel (envelope mode). */
    self.positions = function () { return JSON.parse(JSON.stringify(positions)); };
    /** The reconnect delay bound for attempt n (exposed for tests). */
    self.backoff = backoff;

    connect();
  }

  /**
   * The websocket URI of `facility` on this page's host: prefix is the server's
   * --websocket-url (e.g. '/ws/'), flags the ws4redis query ('subscribe-user&echo').
   */
  WSRedis.uri = function (prefix, facility, flags) {
    var scheme = global.location.protocol === 'https:' ? 'wss://' : 'ws://';
    return scheme + global.location.host + prefix + encodeURIComponent(facility) + (flags ? '?' + flags : '');
  };

  global.WSRedis = WSRedis;
  if (!global.WS4Redis) {
    global.WS4Redis = WSRedis;
  }
}(this));
