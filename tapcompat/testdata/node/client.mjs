// A tap consumer built on npm's @atproto/tap, driven by the Go tests of
// package tapcompat: commands come as JSON lines on stdin, and everything the
// client sees goes out as JSON lines on stdout.
//
//   env TAP_URL (http://host:port), TAP_PASSWORD (optional)
//   {"cmd":"add","dids":[...]}      Tap.addRepos
//   {"cmd":"remove","dids":[...]}   Tap.removeRepos
//   {"cmd":"info","did":"..."}      Tap.getRepoInfo
//   {"cmd":"resolve","did":"..."}   Tap.resolveDid
//   {"cmd":"hold","n":N}            process the next N events without acking them
//   {"cmd":"reconnect"}             destroy the channel and open a new one
//   {"cmd":"exit"}
//
// Output: {"event":{...},"acked":bool} per event handled (acked: the ack was
// sent or is buffered until the channel reconnects), {"ok":cmd,...} per
// command done, {"error":"..."} for errors the client reports.
import { createInterface } from 'node:readline'
import { Tap } from '@atproto/tap'

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')
const tap = new Tap(process.env.TAP_URL, { adminPassword: process.env.TAP_PASSWORD || undefined })
let hold = 0
let channel = null
let running = null
let destroying = false

function summary(evt) {
  if (evt.type === 'record') {
    return {
      id: evt.id, type: evt.type, did: evt.did, live: evt.live, action: evt.action,
      collection: evt.collection, rkey: evt.rkey, rev: evt.rev,
      cid: evt.cid ? String(evt.cid) : undefined,
      text: evt.record && typeof evt.record.text === 'string' ? evt.record.text : undefined,
    }
  }
  return { id: evt.id, type: evt.type, did: evt.did, handle: evt.handle, isActive: evt.isActive, status: evt.status }
}

function open() {
  channel = tap.channel({
    onEvent: async (evt, opts) => {
      if (hold > 0) {
        hold--
        out({ event: summary(evt), acked: false })
        return
      }
      // Not awaited: in @atproto/tap 0.3.12 an ack sent while the socket
      // is down waits for the reconnect, which waits for this handler to
      // return (the channel reads and reconnects in one loop), so awaiting
      // it hangs the client when cistern is killed mid-ack. The channel
      // sends buffered acks once it has reconnected; cistern takes an ack
      // from any connection.
      out({ event: summary(evt), acked: true })
      opts.ack().catch((err) => out({ error: 'ack ' + evt.id + ': ' + String(err) }))
    },
    onError: (err) => out({ error: String(err && err.stack ? err.stack : err) + (err && err.cause ? ' cause: ' + String(err.cause) : '') }),
  })
  const mine = channel
  running = channel.start().then(
    () => { if (channel === mine && !destroying) out({ error: 'channel ended: the server closed the stream cleanly, so the client will not reconnect' }) },
    (err) => out({ error: 'channel: ' + String(err) }),
  )
}

async function handle(c) {
  switch (c.cmd) {
    case 'add': await tap.addRepos(c.dids); return {}
    case 'remove': await tap.removeRepos(c.dids); return {}
    case 'info': return { info: await tap.getRepoInfo(c.did) }
    case 'resolve': return { doc: await tap.resolveDid(c.did) }
    case 'hold': hold = c.n; return {}
    case 'reconnect':
      destroying = true
      destroying = true
await channel.destroy()
      destroying = false
      await running
      open()
      return {}
    case 'exit':
      destroying = true
      destroying = true
await channel.destroy()
      process.exit(0)
  }
  throw new Error('unknown command ' + c.cmd)
}

open()
out({ ready: true })
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue
  const c = JSON.parse(line)
  try {
    out({ ok: c.cmd, ...(await handle(c)) })
  } catch (err) {
    out({ ok: c.cmd, fail: String(err) })
  }
}
destroying = true
await channel.destroy()
