// The REST API. The session lives in this tab's sessionStorage, which is scoped to the page's
// origin (port included), and goes out as `Authorization: Bearer`: never as a cookie, which the
// browser would also hand to any other program listening on this host. A WebSocket or a download
// cannot carry the header, so it gets a single-use ticket first. Errors carry the server's
// `{"error", "code"}` and the HTTP status so callers can tell "signed out" from "daemon away".

const SESSION_KEY = 'firma-session';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function decode(r) {
  let data = null;
  try { data = await r.json(); } catch { /* not JSON: keep null */ }
  if (!r.ok) {
    throw new ApiError(r.status, (data && data.code) || 'http', (data && data.error) || `HTTP ${r.status}`);
  }
  return data;
}

export function session() {
  try {
    return sessionStorage.getItem(SESSION_KEY);
  } catch {
    return null;
  }
}

function authHeaders() {
  const s = session();
  return s ? { authorization: `Bearer ${s}` } : {};
}

/**
 * Sign in with the login link's nonce (from `/#login=<nonce>`, where `/login` sends the browser):
 * the server redeems it once and answers with the session this tab keeps.
 */
export async function signIn(nonce) {
  const data = await api('/login', { method: 'POST', body: { nonce } });
  sessionStorage.setItem(SESSION_KEY, data.session);
}

/** End this tab's session on the server (and its sockets), then forget it. */
export async function signOut() {
  try {
    await api('/logout', { method: 'POST', body: {} });
  } finally {
    sessionStorage.removeItem(SESSION_KEY);
  }
}

/** A single-use ticket for one WebSocket upgrade or one download of `path`: `path?ticket=...`. */
export async function withTicket(path) {
  const { ticket } = await api('/api/tickets', { method: 'POST', body: {} });
  const sep = path.includes('?') ? '&' : '?';
  return `${path}${sep}ticket=${encodeURIComponent(ticket)}`;
}

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'omit', headers: authHeaders() };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `the web server did not answer (${e.message})`);
  }
  return decode(r);
}

/**
 * POST a multipart form with upload progress (fetch has none): `onProgress(sent, total)`.
 * Resolves with the decoded JSON answer.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      const data = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, (data && data.code) || 'http', (data && data.error) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was cut off'));
    xhr.send(form);
  });
}
