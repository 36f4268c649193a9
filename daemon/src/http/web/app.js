// The gallery page: plain DOM, no framework, for old and small browsers (a Pi Zero's).
// Keys live in sessionStorage only; names are always set as text, never as HTML.
'use strict';

var KEY = 'deepstack-api-key', ADMIN = 'deepstack-admin-key';
var $ = function (id) { return document.getElementById(id); };

function apiKey() { return sessionStorage.getItem(KEY) || ''; }

function askForKey(why) {
  $('key-why').textContent = why;
  $('key-form').hidden = false;
  $('api-key').focus();
}

// fetch() with the keys as headers; a 401 asks for the key. Resolves to {status, body}.
function call(method, path, body, admin) {
  var headers = {};
  if (apiKey()) headers['X-Api-Key'] = apiKey();
  if (admin && sessionStorage.getItem(ADMIN)) headers['X-Admin-Key'] = sessionStorage.getItem(ADMIN);
  return fetch(path, { method: method, headers: headers, body: body }).then(function (res) {
    var type = res.headers.get('content-type') || '';
    var read = type.indexOf('json') >= 0 ? res.json() : res.blob();
    return read.then(function (data) {
      if (res.status === 401) askForKey(admin ? 'Re-embedding needs the admin key.' : 'This server needs its API key.');
      return { status: res.status, body: data };
    });
  });
}

// DeepStack's routes read the key from the form, not from a header.
function deepstackForm(fields) {
  var form = new FormData();
  if (apiKey()) form.append('api_key', apiKey());
  Object.keys(fields).forEach(function (k) { form.append(k, fields[k]); });
  return form;
}

function li(list, text, ok) {
  var item = document.createElement('li');
  item.textContent = text;
  item.className = ok ? 'ok' : 'bad';
  list.appendChild(item);
  return item;
}

function when(ms) { return ms ? new Date(ms).toLocaleString() : '-'; }

function errorText(body) {
  if (!body || typeof body !== 'object') return 'error';
  return body.error + (body.reason ? ' (' + body.reason + ')' : '');
}

// Registers each photo on its own, so the answer for every file can be shown.
function register(userid, files, list) {
  list.textContent = '';
  if (!userid) { li(list, 'Give a name first.', false); return Promise.resolve(); }
  var chain = Promise.resolve();
  Array.prototype.forEach.call(files, function (file) {
    chain = chain.then(function () {
      var row = li(list, file.name + ': …', true);
      var form = deepstackForm({ userid: userid });
      form.append('image', file, file.name);
      return call('POST', '/v1/vision/face/register', form).then(function (r) {
        var b = r.body;
        if (b.success && !(b.skipped && b.skipped.length)) {
          row.textContent = file.name + ': added to ' + userid;
        } else if (b.success) {
          row.textContent = file.name + ': skipped, ' + b.skipped[0].reason;
          row.className = 'bad';
        } else {
          row.textContent = file.name + ': skipped, ' + errorText(b);
          row.className = 'bad';
        }
      });
    });
  });
  return chain.then(refresh);
}

function dropZone(zone, onFiles) {
  zone.addEventListener('dragover', function (e) { e.preventDefault(); zone.classList.add('dragover'); });
  zone.addEventListener('dragleave', function () { zone.classList.remove('dragover'); });
  zone.addEventListener('drop', function (e) {
    e.preventDefault();
    zone.classList.remove('dragover');
    if (e.dataTransfer.files.length) onFiles(e.dataTransfer.files);
  });
}

var thumbUrls = [];

function thumb(sample, userid, card) {
  var box = document.createElement('div');
  box.className = sample.negative ? 'thumb negative' : 'thumb';
  box.dataset.sample = sample.id;
  var img = document.createElement('img');
  var q = sample.quality;
  img.alt = (sample.negative ? 'not ' : '') + userid + ', sample ' + sample.id;
  img.title = (sample.negative ? 'not ' + userid + ' (a face said to be someone else): ' : '') + 'added ' + when(sample.added_at) + ' from field "' + sample.source + '", detection ' +
    sample.det_score.toFixed(2) + (q ? ', quality ' + q.score.toFixed(2) + ' (' + q.face_px + ' px)' : '');
  call('GET', '/v1/gallery/samples/' + sample.id + '/crop.jpg').then(function (r) {
    if (r.status !== 200) return;
    var url = URL.createObjectURL(r.body);
    thumbUrls.push(url);
    img.src = url;
  });
  var remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'remove';
  remove.textContent = '×';
  remove.title = 'remove this sample';
  remove.addEventListener('click', function () {
    call('DELETE', '/v1/gallery/samples/' + sample.id).then(function (r) {
      if (r.body.success) refresh(); else card.querySelector('.message').textContent = errorText(r.body);
    });
  });
  box.appendChild(img);
  box.appendChild(remove);
  return box;
}

function personCard(user) {
  var card = document.getElementById('person-tpl').content.firstElementChild.cloneNode(true);
  var path = '/v1/gallery/users/' + encodeURIComponent(user.userid);
  var message = card.querySelector('.message');
  card.dataset.userid = user.userid;
  card.querySelector('.name').textContent = user.userid;
  card.querySelector('.meta').textContent = user.samples + (user.samples === 1 ? ' photo' : ' photos') +
    (user.negatives ? ', ' + user.negatives + ' not ' + user.userid : '') +
    ', last added ' + when(user.last_added_at);
  call('GET', path + '/samples').then(function (r) {
    if (!r.body.success) { message.textContent = errorText(r.body); return; }
    var thumbs = card.querySelector('.thumbs');
    r.body.samples.forEach(function (s) { thumbs.appendChild(thumb(s, user.userid, card)); });
  });
  card.querySelector('.rename').addEventListener('click', function () {
    var to = card.querySelector('.new-name').value.trim();
    if (!to) { message.textContent = 'Type the new name first.'; return; }
    var form = new URLSearchParams();
    form.append('to', to);
    form.append('merge', card.querySelector('.merge').checked ? 'true' : 'false');
    call('POST', path + '/rename', form).then(function (r) {
      if (r.body.success) refresh();
      else if (r.status === 409) message.textContent = to + ' already exists: tick "merge if taken" to merge.';
      else message.textContent = errorText(r.body);
    });
  });
  card.querySelector('.delete').addEventListener('click', function () {
    if (!window.confirm('Delete ' + user.userid + ' and all their photos?')) return;
    call('DELETE', path).then(function (r) {
      if (r.body.success) refresh(); else message.textContent = errorText(r.body);
    });
  });
  // Results go to the "Add photos" list: the card itself is rebuilt by the refresh.
  var list = $('add-results');
  var files = card.querySelector('.files');
  files.addEventListener('change', function () { register(user.userid, files.files, list); });
  card.querySelector('.add').addEventListener('click', function () { files.click(); });
  dropZone(card, function (f) { register(user.userid, f, list); });
  return card;
}

function refresh() {
  return Promise.all([call('GET', '/v1/status'), call('GET', '/v1/gallery/users')]).then(function (r) {
    var status = r[0].body, users = r[1].body;
    $('status').textContent = 'deepstackd ' + status.version + ', ' + status.users +
      (status.users === 1 ? ' person, ' : ' people, ') + status.samples +
      (status.samples === 1 ? ' photo' : ' photos') + (status.faces_enabled ? '' : ' (face API off: set VISION-FACE=True)') +
      (status.gallery && !status.gallery.reachable ? ' \u2014 the shared gallery (PostgreSQL) cannot be reached: recognition goes on, changes are refused' : '');
    showReembed(status.reembed);
    if (!users.success) return;
    thumbUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    thumbUrls = [];
    var people = $('people');
    people.textContent = '';
    users.users.forEach(function (u) { people.appendChild(personCard(u)); });
    $('people-count').textContent = '(' + users.users.length + ')';
    return Promise.all([refreshStrangers(), refreshNamed()]);
  });
}

// "Who came by": the stranger groups of the recent faces, each with its best crop.
var coverUrls = [], strangersTotal = 0;

function strangerCard(g) {
  var card = document.getElementById('stranger-tpl').content.firstElementChild.cloneNode(true);
  var path = '/v1/gallery/strangers/' + g.group;
  var message = $('strangers-message');
  card.dataset.group = g.group;
  var img = card.querySelector('.cover');
  img.alt = 'stranger ' + g.group;
  call('GET', '/v1/gallery/recent/' + g.cover + '/crop.jpg').then(function (r) {
    if (r.status !== 200) return;
    var url = URL.createObjectURL(r.body);
    coverUrls.push(url);
    img.src = url;
  });
  card.querySelector('.meta').textContent = 'seen ' + g.faces + (g.faces === 1 ? ' time' : ' times') +
    ', last ' + when(g.last_seen);
  card.querySelector('.name-it').addEventListener('click', function () {
    var userid = card.querySelector('.this-is').value.trim();
    if (!userid) { message.textContent = 'Type who this is first.'; return; }
    var form = new URLSearchParams();
    form.append('userid', userid);
    call('POST', path + '/name', form).then(function (r) {
      var b = r.body;
      message.textContent = b.success
        ? b.samples + (b.samples === 1 ? ' photo' : ' photos') + ' added to ' + b.userid +
          (b.skipped ? ', ' + b.skipped.length + ' too poor to keep' : '')
        : errorText(b);
      if (b.success) refresh();
    });
  });
  card.querySelector('.forget').addEventListener('click', function () {
    call('DELETE', path).then(function (r) {
      if (r.body.success) refreshStrangers(); else message.textContent = errorText(r.body);
    });
  });
  return card;
}

function refreshStrangers() {
  return call('GET', '/v1/gallery/strangers?limit=50').then(function (r) {
    if (!r.body.success) return 0;
    coverUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    coverUrls = [];
    var list = $('strangers');
    list.textContent = '';
    r.body.groups.forEach(function (g) { list.appendChild(strangerCard(g)); });
    $('strangers-count').textContent = '(' + r.body.total + ')';
    strangersTotal = r.body.total;
    return r.body.total;
  });
}

// "Recognised lately": the recent faces that were given a name, each with "Not <name>".
var namedUrls = [];

function namedCard(f) {
  var card = document.getElementById('named-tpl').content.firstElementChild.cloneNode(true);
  var message = $('named-message');
  card.dataset.face = f.id;
  var img = card.querySelector('.cover');
  img.alt = f.userid + ', recent face ' + f.id;
  call('GET', '/v1/gallery/recent/' + f.id + '/crop.jpg').then(function (r) {
    if (r.status !== 200) return;
    var url = URL.createObjectURL(r.body);
    namedUrls.push(url);
    img.src = url;
  });
  card.querySelector('.meta').textContent = f.userid + ' ' + f.confidence.toFixed(2) +
    (f.camera ? ', ' + f.camera : '') + ', ' + when(f.seen_at);
  var not = card.querySelector('.not');
  not.textContent = 'Not ' + f.userid;
  not.addEventListener('click', function () {
    call('POST', '/v1/gallery/recent/' + f.id + '/not', new URLSearchParams()).then(function (r) {
      message.textContent = r.body.success
        ? 'Kept as a photo that is not ' + r.body.userid + '.'
        : errorText(r.body);
      if (r.body.success) refresh();
    });
  });
  return card;
}

function refreshNamed() {
  return call('GET', '/v1/gallery/recent?limit=200').then(function (r) {
    if (!r.body.success) return;
    namedUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    namedUrls = [];
    var list = $('named');
    list.textContent = '';
    var named = r.body.faces.filter(function (f) { return f.userid; }).slice(0, 50);
    named.forEach(function (f) { list.appendChild(namedCard(f)); });
    $('named-count').textContent = '(' + named.length + ')';
  });
}

// Recognize keeps faces within about a second: look again a few times after a stranger.
function watchStrangers(tries, before) {
  setTimeout(function () {
    refreshNamed();
    refreshStrangers().then(function (n) { if (n === before && tries > 1) watchStrangers(tries - 1, before); });
  }, 1000);
}

function showReembed(p) {
  if (!p) return;
  var text = p.state === 'idle' ? '' : p.state + ': ' + p.done + ' of ' + p.total +
    (p.failed ? ', ' + p.failed + ' failed' : '') + (p.error ? ' (' + p.error + ')' : '');
  $('reembed-status').textContent = text;
  $('reembed').disabled = p.state === 'running';
  if (p.state === 'running') setTimeout(function () {
    call('GET', '/v1/status').then(function (r) { showReembed(r.body.reembed); if (r.body.reembed.state !== 'running') refresh(); });
  }, 1000);
}

// Draws the photo and a box with name and confidence for every face.
function tryIt(file) {
  var list = $('try-results');
  list.textContent = '';
  var form = deepstackForm({});
  form.append('image', file, file.name);
  call('POST', '/v1/vision/face/recognize', form).then(function (r) {
    if (!r.body.success) { li(list, errorText(r.body), false); return; }
    var faces = r.body.predictions;
    if (!faces.length) li(list, 'no face found', false);
    faces.forEach(function (f) {
      li(list, f.userid + ' ' + f.confidence.toFixed(2), f.userid !== 'unknown');
    });
    if (faces.length) watchStrangers(5, strangersTotal);
    var img = new Image();
    var url = URL.createObjectURL(file);
    img.onload = function () {
      var c = $('try-canvas'), g = c.getContext('2d');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      g.drawImage(img, 0, 0);
      var px = Math.max(14, Math.round(Math.max(c.width, c.height) / 30));
      g.lineWidth = Math.max(2, px / 6);
      g.font = px + 'px sans-serif';
      faces.forEach(function (f) {
        var known = f.userid !== 'unknown';
        var label = f.userid + ' ' + f.confidence.toFixed(2);
        g.strokeStyle = known ? '#2c2' : '#e33';
        g.strokeRect(f.x_min, f.y_min, f.x_max - f.x_min, f.y_max - f.y_min);
        var w = g.measureText(label).width + 8, y = Math.max(0, f.y_min - px - 6);
        g.fillStyle = g.strokeStyle;
        g.fillRect(f.x_min, y, w, px + 6);
        g.fillStyle = '#fff';
        g.fillText(label, f.x_min + 4, y + px);
      });
      URL.revokeObjectURL(url);
      c.dataset.drawn = faces.length;
    };
    img.src = url;
  });
}

$('key-form').addEventListener('submit', function (e) {
  e.preventDefault();
  sessionStorage.setItem(KEY, $('api-key').value);
  if ($('admin-key').value) sessionStorage.setItem(ADMIN, $('admin-key').value);
  $('key-form').hidden = true;
  refresh();
});
$('add-files').addEventListener('change', function () {
  register($('add-name').value.trim(), $('add-files').files, $('add-results'));
});
dropZone($('add-drop'), function (f) { register($('add-name').value.trim(), f, $('add-results')); });
$('try-files').addEventListener('change', function () { if ($('try-files').files[0]) tryIt($('try-files').files[0]); });
dropZone($('try-drop'), function (f) { tryIt(f[0]); });
$('reembed').addEventListener('click', function () {
  call('POST', '/v1/gallery/reembed', null, true).then(function (r) {
    if (r.body.success) showReembed(r.body.reembed);
    else $('reembed-status').textContent = errorText(r.body);
  });
});
refresh();
