// The REST API. Same-origin requests with the session cookie; errors carry the server's
// `{"error", "code"}` and the HTTP status so callers can tell "signed out" from "daemon away".

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

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: {} };
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
    xhr.withCredentials = true;
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
