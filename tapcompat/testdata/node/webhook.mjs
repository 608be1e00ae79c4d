// A tap webhook receiver on npm's @atproto/tap helpers (parseTapEvent,
// assureAdminAuth), driven by the Go tests of package tapcompat. It answers
// the first FAIL_FIRST posts with 500, then parses each post as a tap event,
// prints it as a JSON line and answers 200; a post it cannot parse or whose
// credentials are wrong gets 400 and an {"error":...} line.
//
//   env TAP_PASSWORD (optional), FAIL_FIRST (default 0)
//   prints {"port":N} once listening on 127.0.0.1
import { createServer } from 'node:http'
import { lexParse } from '@atproto/lex'
import { parseTapEvent, assureAdminAuth } from '@atproto/tap'

const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')
let failFirst = Number(process.env.FAIL_FIRST || 0)

const server = createServer(async (req, res) => {
  const chunks = []
  for await (const c of req) chunks.push(c)
  if (failFirst > 0) {
    failFirst--
    res.writeHead(500).end()
    return
  }
  try {
    if (process.env.TAP_PASSWORD) {
      assureAdminAuth(process.env.TAP_PASSWORD, req.headers.authorization || '')
    }
    const evt = parseTapEvent(lexParse(Buffer.concat(chunks).toString(), { strict: true }))
    out({ event: evt.type === 'record'
      ? { id: evt.id, type: evt.type, did: evt.did, live: evt.live, action: evt.action, collection: evt.collection, rkey: evt.rkey }
      : { id: evt.id, type: evt.type, did: evt.did, handle: evt.handle, isActive: evt.isActive, status: evt.status } })
    res.writeHead(200).end()
  } catch (err) {
    out({ error: String(err) + (err && err.cause ? ' cause: ' + String(err.cause) : '') })
    res.writeHead(400).end()
  }
})
server.listen(0, '127.0.0.1', () => out({ port: server.address().port }))
process.stdin.on('end', () => server.close(() => process.exit(0)))
process.stdin.resume()
