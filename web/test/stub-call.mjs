// The browser test (call.mjs) against the stand-in node of stub.mjs: checks
// the page alone, without a DOTS node. Run it where only loopback exists, so
// that WebRTC stays on 127.0.0.1:
//
//   unshare --net -- sh -c 'ip link set lo up && node test/stub-call.mjs [screenshot.png]'
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStub } from './stub.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const stub = await startStub({ users: { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' } });
const args = {
  alice: { url: stub.url, aor: 'alice@127.0.0.1', password: 'alice-pw' },
  bob: { url: stub.url, aor: 'bob@127.0.0.1', password: 'bob-pw' },
  offline: 'carol@127.0.0.1',
  screenshot: process.argv[2],
};
const child = spawn(process.execPath, [join(here, 'call.mjs'), JSON.stringify(args)], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
let out = '';
child.stdout.on('data', (d) => {
  out += d;
});
const code = await new Promise((resolve) => child.on('exit', resolve));
stub.close();
process.stdout.write(out);
process.exit(code);
