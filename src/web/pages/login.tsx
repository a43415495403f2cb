// Log in with an access token (`xvm web token` on the host prints one).
import { useState } from 'preact/hooks';
import { ApiError, post } from '../api.js';

export function Login({ onLogin }: { onLogin: (name: string) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await post<{ token: { name: string } }>('/v1/web/login', { token: token.trim() });
      onLogin(r.token.name);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? 'Invalid or revoked access token.' : (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="login">
      <form class="card login-card" onSubmit={submit}>
        <h1><img src="/favicon.svg" alt="" width="28" height="28" /> xvm</h1>
        <p class="muted">Log in with an access token. On the host, <code>xvm web token</code> prints one.</p>
        <label for="token">Access token</label>
        <input id="token" name="token" type="password" autocomplete="off" value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} placeholder="xvm_…" autofocus />
        {error && <p class="error" role="alert" data-testid="login-error">{error}</p>}
        <button type="submit" class="primary" disabled={busy || !token.trim()}>{busy ? 'Logging in…' : 'Log in'}</button>
      </form>
    </div>
  );
}
