// The web manager's front end: login, then the pages, with live state from
// the events websocket. Built by scripts/build-web.js into dist/web.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { get, post, setUnauthorizedHandler } from './api.js';
import { live, useLive } from './live.js';
import { useRoute } from './router.js';
import { Login } from './pages/login.js';
import { HostPage } from './pages/host.js';
import { DomainsPage } from './pages/domains.js';
import { DomainPage } from './pages/domain.js';
import { CreatePage } from './pages/create.js';
import { StoragePage } from './pages/storage.js';
import { NetworksPage } from './pages/networks.js';
import { SavesPage } from './pages/saves.js';
import { InstallPage } from './pages/install.js';

function App() {
  const [user, setUser] = useState<string | null | undefined>(undefined);
  useEffect(() => {
    setUnauthorizedHandler(() => {
      live.stop();
      setUser(null);
    });
    get<{ token: string | null }>('/v1/web/whoami').then((w) => setUser(w.token), () => setUser(null));
  }, []);
  useEffect(() => {
    if (user) live.start();
  }, [user]);
  if (user === undefined) return null;
  if (user === null) return <Login onLogin={setUser} />;
  const logout = async () => {
    await post('/v1/web/logout').catch(() => undefined);
    live.stop();
    setUser(null);
  };
  return <Shell user={user} onLogout={() => void logout()} />;
}

function Shell({ user, onLogout }: { user: string; onLogout: () => void }) {
  const route = useRoute();
  const state = useLive();
  const parts = route.split('/').filter(Boolean).map(decodeURIComponent);
  let page;
  let section = parts[0] ?? 'domains';
  if (parts[0] === 'host') page = <HostPage />;
  else if (parts[0] === 'create') page = <CreatePage />;
  else if (parts[0] === 'storage') page = <StoragePage pool={parts[1]} />;
  else if (parts[0] === 'networks') page = <NetworksPage net={parts[1]} />;
  else if (parts[0] === 'saves') page = <SavesPage />;
  else if (parts[0] === 'install') page = <InstallPage />;
  else if (parts[0] === 'domains' && parts[1]) page = <DomainPage name={parts[1]} tab={(parts[2] as 'console') ?? 'overview'} />;
  else {
    section = 'domains';
    page = <DomainsPage />;
  }
  const nav: [string, string][] = [['domains', 'Domains'], ['create', 'New domain'], ['install', 'Install from ISO'], ['saves', 'Saved domains'], ['host', 'Host'], ['storage', 'Storage'], ['networks', 'Networks']];
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/domains"><img src="/favicon.svg" alt="" width="22" height="22" /> xvm</a>
        <span class={`conn ${state.connected ? 'on' : 'off'}`} title="live updates over the events websocket">{state.connected ? '● live' : '○ reconnecting'}</span>
        <span class="spacer" />
        <span class="muted">token <b>{user}</b></span>
        <button class="link" onClick={onLogout}>Log out</button>
      </header>
      <nav class="side">
        {nav.map(([k, label]) => (
          <a key={k} href={`#/${k}`} class={section === k ? 'active' : ''}>{label}</a>
        ))}
      </nav>
      <main class="content">{page}</main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
