package main

import (
	"html/template"
	"net/http"
)

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Statusphere</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:2em auto;max-width:36em;padding:0 1em;color:#1f2328}
h1{font-size:1.5em}ul{list-style:none;padding:0}li{display:flex;gap:.8em;align-items:center;padding:.4em 0;border-bottom:1px solid #eaeef2}
.emoji{font-size:1.8em;width:1.4em;text-align:center}.handle{font-weight:600}.when{color:#57606a;font-size:.85em;margin-left:auto}
#live{font-size:.8em;color:#57606a}
</style></head><body>
<h1>Statusphere</h1>
<p>Everyone's latest <code>xyz.statusphere.status</code>, indexed by cistern. <span id="live">connecting…</span></p>
<ul id="statuses">
{{range .}}<li data-did="{{.DID}}"><span class="emoji">{{.Status}}</span><span class="handle">{{.Handle}}</span><span class="when">{{.CreatedAt.Format "2006-01-02 15:04:05"}}</span></li>
{{else}}<li class="empty">No statuses yet.</li>
{{end}}</ul>
<script>
const list = document.getElementById("statuses"), live = document.getElementById("live");
function row(s) {
  const li = document.createElement("li");
  li.dataset.did = s.did;
  for (const [cls, text] of [["emoji", s.status], ["handle", s.handle], ["when", new Date(s.createdAt).toLocaleString()]]) {
    const span = document.createElement("span"); span.className = cls; span.textContent = text; li.appendChild(span);
  }
  return li;
}
function render(all) { list.replaceChildren(...all.map(row)); }
function upsert(s) {
  const old = list.querySelector('li[data-did="' + CSS.escape(s.did) + '"]');
  if (old) old.remove();
  const empty = list.querySelector(".empty"); if (empty) empty.remove();
  if (s.status) list.prepend(row(s));
}
const es = new EventSource("/events");
es.onopen = () => { live.textContent = "live"; fetch("/api/statuses").then(r => r.json()).then(render); };
es.onerror = () => { live.textContent = "reconnecting…"; };
es.addEventListener("status", e => upsert(JSON.parse(e.data)));
</script>
</body></html>
`))

func (a *App) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, a.Statuses()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
