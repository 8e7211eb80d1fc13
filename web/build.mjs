// Builds the softphone into dist/: index.html, softphone.js (JsSIP and the
// page, bundled and minified by esbuild) and softphone.css. The output is
// committed and embedded in the node binary (crates/dots-node/src/web.rs),
// so building the node needs no npm. Run `./build.sh` (or `npm run build`).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// `--out DIR` builds elsewhere (the tests compare that with dist/).
const outAt = process.argv.indexOf('--out');
const dist = outAt > 0 ? process.argv[outAt + 1] : join(here, 'dist');
mkdirSync(dist, { recursive: true });

// The bundled packages and their licenses, named at the top of the bundle.
const bundled = ['jssip', 'sdp-transform', 'debug', 'ms', 'events'].map((name) => {
  const pkg = JSON.parse(readFileSync(join(here, 'node_modules', name, 'package.json'), 'utf8'));
  return `${pkg.name} ${pkg.version} (${pkg.license})`;
});

await build({
  entryPoints: [join(here, 'src/app.js')],
  banner: { js: `/*! DOTS softphone. Bundles ${bundled.join(', ')}. */` },
  outfile: join(dist, 'softphone.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});
await build({
  entryPoints: [join(here, 'src/app.css')],
  outfile: join(dist, 'softphone.css'),
  bundle: true,
  minify: true,
  logLevel: 'warning',
});
copyFileSync(join(here, 'src/index.html'), join(dist, 'index.html'));
console.log(`${dist}: index.html softphone.js softphone.css`);
