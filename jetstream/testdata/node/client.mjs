// Runs one Jetstream client from npm against a server, for cistern's Go
// tests. Usage: node client.mjs '<json options>'
//   {"client":"skyware"|"atcute", "url":"http://127.0.0.1:port",
//    "cursor":N?, "wantedCollections":[...]?, "wantedDids":[...]?}
// Prints one JSON object per line: {"type":"open"}, {"type":"event","event":…},
// {"type":"updated"}, {"type":"error","message":…}. Reads commands from
// stdin, one JSON object per line: {"update":{"wantedCollections":[...],
// "wantedDids":[...]}} sends an options_update through the client.
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

let update;
if (opts.client === 'skyware') {
  const { Jetstream } = await import('@skyware/jetstream');
  const js = new Jetstream({
    endpoint: opts.url.replace(/^http/, 'ws') + '/subscribe',
    wantedCollections: opts.wantedCollections,
    wantedDids: opts.wantedDids,
    cursor: opts.cursor,
  });
  js.on('open', () => out({ type: 'open' }));
  js.on('error', (err) => out({ type: 'error', message: String(err && err.message || err) }));
  for (const kind of ['commit', 'identity', 'account']) {
    js.on(kind, (event) => out({ type: 'event', event }));
  }
  js.start();
  update = (u) => js.updateOptions(u);
} else if (opts.client === 'atcute') {
  const { JetstreamSubscription } = await import('@atcute/jetstream');
  const sub = new JetstreamSubscription({
    url: opts.url.replace(/^http/, 'ws'),
    cursor: opts.cursor,
    wantedCollections: opts.wantedCollections,
    wantedDids: opts.wantedDids,
    onConnectionOpen: () => out({ type: 'open' }),
    onError: (err) => out({ type: 'error', message: String(err && err.message || err) }),
  });
  update = (u) => sub.updateOptions(u);
  (async () => {
    for await (const event of sub) {
      out({ type: 'event', event });
    }
  })();
} else {
  out({ type: 'error', message: 'unknown client ' + opts.client });
  process.exit(2);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.update) {
    update(cmd.update);
    out({ type: 'updated' });
  }
});
rl.on('close', () => process.exit(0));
