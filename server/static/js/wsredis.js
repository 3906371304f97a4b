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
    disconnected: null
  };

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

    function call(name, arg) {
      if (typeof opts[name] === 'function') {
        try {
          opts[name](arg);
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

    function connect() {
      call('connecting');
      var sock;
      try {
        sock = new global.WebSocket(opts.uri);
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
