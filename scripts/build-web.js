#!/usr/bin/env node
// Builds the web manager's front end (src/web) into dist/web with esbuild:
// one bundle of the app and its libraries (preact, @xterm/xterm), its CSS,
// index.html and the icon. Everything xvmd serves comes from here: no CDN.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const src = path.join(root, 'src', 'web');
const out = path.join(root, 'dist', 'web');

rmSync(out, { recursive: true, force: true });
mkdirSync(path.join(out, 'assets'), { recursive: true });
await build({
  entryPoints: { app: path.join(src, 'main.tsx') },
  outdir: path.join(out, 'assets'),
  chunkNames: 'chunk-[name]-[hash]',
  bundle: true,
  format: 'esm',
  splitting: true, // noVNC in its own chunk, loaded when a graphical console opens
  platform: 'browser',
  target: ['chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning',
  tsconfig: path.join(src, 'tsconfig.json'),
});
for (const f of ['index.html', 'favicon.svg']) copyFileSync(path.join(src, f), path.join(out, f));
console.log(`build-web: ${path.relative(root, out)}`);
