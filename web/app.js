// The reference web client: no framework, no build step. It shows what a frontend needs from the
// backend: the agents a user may use, a conversation that survives a reload (its id is kept in
// localStorage and its messages read back from GET /api/conversations/{id}/messages), and tasks
// with their approval step, and today's token usage against the daily budget; replies are shown
// as the model writes them when the streaming route is configured, and changes made elsewhere
// (another tab, the scheduler) as the live socket reports them. An agent's tool calls and their
// results are shown in the conversation, and a call that waits for a person has Approve / Reject
// buttons (POST /api/runs/{id}/tool-calls/{callId}/approve|reject). On an agent of the user's own,
// the MCP servers it takes tools from (GET|PUT /api/agents/{id}/tool-sources) can be added and
// removed, and each one's tools listed with whether a call runs at once or waits for approval
// (GET /api/agents/{id}/tool-sources/{name}/tools). Configuration comes from
// config.json next to this file (scripts/dev writes it):
//   { "chatBase", "apiBase", "streamBase", "liveUrl", "token" }
// In AWS chatBase and apiBase are the HTTP API's URL and streamBase the chat-stream function URL
// (without it, the buffered route); under `cargo lambda watch` each function has its own.
// This is a module: the configuration and the access token live in its scope, never in a global
// another script could read; index.html's Content-Security-Policy allows no inline script.

const config = await fetch("config.json", { cache: "no-store" })
  .then((r) => (r.ok ? r.json() : {}))
  .catch(() => ({}));
const $ = (id) => document.getElementById(id);

function say(text) {
  $("status").textContent = text || "";
}

async function call(base, path, { method = "GET", body, key } = {}) {
  const headers = { authorization: `Bearer ${config.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key) headers["idempotency-key"] = key;
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    const retry = response.headers.get("retry-after");
    const error = new Error(`${response.status}: ${message}${retry ? ` (retry in ${retry} s)` : ""}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    error.retryAfter = Number(retry) || 0;
    throw error;
  }
  return data;
}

// The next 00:00 UTC (when budgets reset), in the reader's own time.
function resetTime(at) {
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `${time} (00:00 UTC)`;
}

// What to tell the user about a failed request: a spent budget says when it resets.
function explain(e) {
  if (e.code !== "budget_exhausted") return e.message;
  const at = e.retryAfter ? new Date(Date.now() + e.retryAfter * 1000) : null;
  $("usage").classList.add("exhausted");
  return "Daily token budget spent (yours or this agent's): no more replies until it resets" +
    (at ? ` at ${resetTime(at)}` : " at 00:00 UTC") + ".";
}

const api = (path, options) => call(config.apiBase, path, options);

function agentId() {
  return $("agent").value;
}

function conversationKey() {
  return `conversation:${agentId()}`;
}

// A message as a list item: a user's or the agent's text; an agent's step that called tools (its
// text, then a compact block per call: the tool's name and its JSON arguments); or a call's result
// (role "tool", a collapsed block). `names` maps call ids to tool names. Everything is text
// (textContent), never markup.
function messageItem(message, done = true, names = new Map()) {
  if (message.role === "tool") {
    return toolResultItem(message.toolCallId, message.content, names.get(message.toolCallId), message.id);
  }
  const li = document.createElement("li");
  li.className = message.role;
  li.dataset.id = message.id;
  if (done) li.dataset.done = "true";
  if (message.toolCalls && message.toolCalls.length) {
    li.classList.add("tool-step");
    if (message.runId) li.dataset.runId = message.runId;
    if (message.content) li.append(stepText(message.content));
    for (const c of message.toolCalls) li.append(toolCallBlock(c));
  } else {
    li.textContent = message.content;
  }
  return li;
}

// ---- tool calls (issue 22) --------------------------------------------------------------------
const ARGUMENTS_SHOWN_CHARS = 500;
const RESULT_SHOWN_CHARS = 2000;

// A value as JSON text (a stored result is JSON text already: re-indented when it parses).
function jsonText(value, indent = 0) {
  let v = value;
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      return v;
    }
  }
  return JSON.stringify(v, null, indent) ?? String(v);
}

function cut(text, max) {
  return text.length > max ? `${text.slice(0, max)}… (${text.length - max} more characters)` : text;
}

function stepText(text) {
  const div = document.createElement("div");
  div.className = "step-text";
  div.textContent = text;
  return div;
}

function toolCallBlock(call) {
  const div = document.createElement("div");
  div.className = "tool-call";
  div.dataset.callId = call.id;
  const name = document.createElement("span");
  name.className = "tool-name";
  name.textContent = call.name;
  const args = document.createElement("code");
  args.className = "tool-arguments";
  args.textContent = cut(jsonText(call.arguments ?? {}), ARGUMENTS_SHOWN_CHARS);
  div.append(name, args);
  return div;
}

function toolResultItem(callId, result, name, id) {
  const li = document.createElement("li");
  li.className = "tool";
  if (id) li.dataset.id = id;
  li.dataset.callId = callId;
  li.dataset.done = "true";
  let failed = false;
  try {
    const value = typeof result === "string" ? JSON.parse(result) : result;
    failed = !!value && typeof value === "object" && !Array.isArray(value) && "error" in value;
  } catch {
    // Not JSON: shown as it is.
  }
  if (failed) li.classList.add("error");
  const details = document.createElement("details");
  details.className = "tool-result";
  const summary = document.createElement("summary");
  summary.textContent = `${failed ? "error from" : "result of"} ${name || "tool call"} (${callId})`;
  const pre = document.createElement("pre");
  pre.textContent = cut(jsonText(result, 2), RESULT_SHOWN_CHARS);
  details.append(summary, pre);
  li.append(details);
  return li;
}

// The call blocks on screen of call `callId`.
function callBlocks(callId) {
  return [...document.querySelectorAll("#messages .tool-call")].filter((b) => b.dataset.callId === callId);
}

// Approve / Reject on each call of run `runId` waiting for a decision (`calls`: {id, name,
// arguments}); a call not on screen yet gets its block.
function showAwaiting(runId, calls) {
  for (const call of calls) {
    let block = callBlocks(call.id).at(-1);
    if (!block) {
      const li = messageItem({ role: "assistant", content: "", id: "", toolCalls: [call], runId });
      $("messages").appendChild(li);
      block = li.querySelector(".tool-call");
    }
    if (block.querySelector(".tool-approval")) continue;
    const box = document.createElement("div");
    box.className = "tool-approval";
    box.dataset.runId = runId;
    box.dataset.callId = call.id;
    const state = document.createElement("span");
    state.className = "tool-approval-state";
    state.textContent = "waits for your decision";
    box.append(state);
    for (const [action, label] of [["approve", "Approve"], ["reject", "Reject"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.action = action;
      button.addEventListener("click", () => decide(runId, call.id, action, box));
      box.append(button);
    }
    block.append(box);
    block.scrollIntoView({ block: "end" });
  }
}

// The run's state on each of its approval boxes.
function showRunState(runId, run) {
  const says = {
    awaiting_approval: "the run waits for a decision",
    running: "the run will resume with your decision",
    completed: "the run completed",
  };
  for (const box of document.querySelectorAll("#messages .tool-approval")) {
    if (box.dataset.runId !== runId) continue;
    box.dataset.runStatus = run.status;
    if (box.dataset.decision) {
      box.querySelector(".tool-approval-state").textContent =
        `${box.dataset.decision} · ${says[run.status] || `the run ended: ${run.status}`}` +
        (run.lastError ? ` (${run.lastError})` : "");
    }
  }
}

async function decide(runId, callId, action, box) {
  const buttons = [...box.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  const state = box.querySelector(".tool-approval-state");
  box.classList.remove("error");
  try {
    const run = await api(`/api/runs/${runId}/tool-calls/${encodeURIComponent(callId)}/${action}`, {
      method: "POST",
    });
    box.dataset.decision = action === "approve" ? "approved" : "rejected";
    buttons.forEach((b) => b.remove());
    showRunState(runId, run);
    followRun(runId, run);
  } catch (e) {
    // 409: decided already (here or elsewhere) or the run no longer waits (expired, ended);
    // 404: the call is not waiting in that run. Either way these buttons are done.
    box.classList.add("error");
    box.dataset.error = String(e.status || "");
    if (e.status === 409 || e.status === 404) {
      state.textContent = `${e.status === 409 ? "Cannot decide any more" : "Not waiting"}: ${e.message}`;
      buttons.forEach((b) => b.remove());
      followRun(runId);
    } else {
      state.textContent = `Not sent: ${explain(e)}`;
      buttons.forEach((b) => (b.disabled = false));
    }
    say(e.message);
  }
}

// After a decision the run resumes later (a task's at the scheduler's next tick): its view is
// read every 2 s, at most 30 times, and the conversation and tasks read again once it has left
// awaiting_approval / running. A run whose other calls still wait stops there (their buttons).
const RUN_POLL_MS = 2000;
const RUN_POLLS = 30;
const followed = new Set();

async function followRun(runId, first) {
  if (followed.has(runId)) return;
  followed.add(runId);
  try {
    let run = first;
    for (let i = 0; ; i++) {
      if (run) {
        showRunState(runId, run);
        if (run.status === "awaiting_approval" && run.awaiting.length) {
          showAwaiting(runId, run.awaiting.map((c) => ({ id: c.toolCallId, name: c.name, arguments: c.arguments })));
          return;
        }
        if (run.status !== "awaiting_approval" && run.status !== "running") {
          loadConversation();
          loadTasks();
          return;
        }
      }
      if (i >= RUN_POLLS) return;
      await new Promise((resolve) => setTimeout(resolve, RUN_POLL_MS));
      try {
        run = await api(`/api/runs/${runId}`);
      } catch (e) {
        say(e.message);
        if (e.status === 404) return;
        run = null;
      }
    }
  } finally {
    followed.delete(runId);
  }
}

// The runs of the shown conversation with calls that have no result yet: each read once, its
// waiting calls given their buttons (a page loaded while a run is paused shows them).
function checkOpenRuns(messages) {
  const answered = new Set(messages.filter((m) => m.role === "tool").map((m) => m.toolCallId));
  const open = new Set();
  for (const m of messages) {
    if (m.runId && (m.toolCalls || []).some((c) => !answered.has(c.id))) open.add(m.runId);
  }
  for (const runId of [...open].slice(-3)) {
    api(`/api/runs/${runId}`)
      .then((run) => {
        if (run.status === "awaiting_approval") {
          showAwaiting(runId, run.awaiting.map((c) => ({ id: c.toolCallId, name: c.name, arguments: c.arguments })));
        }
        if (run.status === "running") followRun(runId, run);
      })
      .catch((e) => say(e.message));
  }
}
// ---- end of tool calls ------------------------------------------------------------------------

function showElement(li) {
  $("messages").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function showMessage(message, done = true) {
  return showElement(messageItem(message, done));
}

// While this page sends a message (its own message and the reply being written are on screen),
// a refetch of the conversation waits: it runs once the reply is in.
const conversation = { sending: false, stale: false };

// POST /api/agents/chat/stream: Server-Sent Events (meta, delta, done, error), the reply shown
// as it grows. Errors before the stream are JSON, as on the buffered route.
// Behind CloudFront with Origin Access Control (StreamingFrontDoor cloudfront), a POST must carry
// its body's SHA-256 in x-amz-content-sha256; the function URL alone ignores it.
async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sendStreamed(body, key) {
  const payload = JSON.stringify(body);
  const response = await fetch(config.streamBase + "/api/agents/chat/stream", {
    method: "POST",
    headers: {
      authorization: `Bearer ${config.token}`,
      "content-type": "application/json",
      "idempotency-key": crypto.randomUUID(),
      "x-amz-content-sha256": await sha256Hex(payload),
    },
    body: payload,
  });
  if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
    const data = await response.json().catch(() => ({}));
    const error = new Error(`${response.status}: ${(data.error && data.error.message) || response.statusText}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    error.retryAfter = Number(response.headers.get("retry-after")) || 0;
    throw error;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let li = null;
  let replyId = "";
  // The step whose calls are being shown (consecutive tool_call events), and the tools' names.
  let step = null;
  const names = new Map();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const name = (raw.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((raw.match(/^data: (.*)$/m) || [])[1] || "null");
      if (name === "meta") {
        localStorage.setItem(key, data.conversationId);
        replyId = data.id;
        li = showMessage({ role: "assistant", content: "", id: replyId }, false);
      } else if (name === "delta") {
        // After a step's tool calls, the next model call writes into a new item.
        if (!li) li = showMessage({ role: "assistant", content: "", id: replyId }, false);
        step = null;
        li.textContent += data.text;
        li.scrollIntoView({ block: "end" });
      } else if (name === "tool_call") {
        names.set(data.id, data.name);
        if (!step) {
          // The text written so far was this step's: it becomes the step's item.
          const text = li ? li.textContent : "";
          if (li) li.remove();
          li = null;
          step = showMessage({ role: "assistant", content: "", id: "" });
          step.classList.add("tool-step");
          if (text) step.append(stepText(text));
        }
        step.append(toolCallBlock(data));
        step.scrollIntoView({ block: "end" });
      } else if (name === "tool_result") {
        showElement(toolResultItem(data.toolCallId, data.result, names.get(data.toolCallId)));
      } else if (name === "awaiting_approval") {
        if (li && !li.textContent) li.remove();
        li = null;
        showAwaiting(data.runId, data.toolCalls);
        say("The agent waits for your decision on a tool call.");
      } else if (name === "done") {
        if (!li) li = showMessage({ role: "assistant", content: "", id: replyId }, false);
        li.textContent = data.message.content;
        li.dataset.done = "true";
      } else if (name === "error") {
        if (li) li.remove();
        const error = new Error(`${data.code}: ${data.message}`);
        error.code = data.code;
        throw error;
      }
    }
  }
}

async function loadConversation() {
  if (conversation.sending) {
    conversation.stale = true;
    return;
  }
  const key = conversationKey();
  const id = localStorage.getItem(key);
  if (!id) {
    $("messages").replaceChildren();
    return;
  }
  try {
    const page = await api(`/api/conversations/${id}/messages?limit=100`);
    // The list is replaced in one step, and not under a message being sent meanwhile, nor
    // after the agent changed.
    if (conversation.sending) {
      conversation.stale = true;
      return;
    }
    if (conversationKey() !== key) return;
    const names = new Map(page.messages.flatMap((m) => (m.toolCalls || []).map((c) => [c.id, c.name])));
    const items = page.messages.map((m) => messageItem(m, true, names));
    $("messages").replaceChildren(...items);
    items.at(-1)?.scrollIntoView({ block: "end" });
    checkOpenRuns(page.messages);
  } catch (e) {
    // Gone or not this user's: start afresh. Anything else (a busy service, the network) keeps it.
    if (e.status === 404) localStorage.removeItem(conversationKey());
    say(e.message);
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  // Captured now: the agent may change while the reply is on its way.
  const key = conversationKey();
  const body = { agentId: agentId(), message: text };
  const conversationId = localStorage.getItem(key);
  if (conversationId) body.conversationId = conversationId;
  showMessage({ role: "user", content: text, id: "" });
  $("message").value = "";
  say("");
  // One message at a time: the next one needs this one's conversationId.
  const controls = [$("message"), $("agent"), ...$("send").querySelectorAll("button")];
  controls.forEach((c) => (c.disabled = true));
  conversation.sending = true;
  try {
    if (config.streamBase) {
      await sendStreamed(body, key);
    } else {
      // One key per message: a retry of this request never stores it twice.
      const reply = await call(config.chatBase, "/api/agents/chat", {
        method: "POST",
        body,
        key: crypto.randomUUID(),
      });
      if (reply.status === "awaiting_approval") {
        // 202: the run waits for a decision. Its view names the conversation; the conversation,
        // read again below, shows the steps and the buttons.
        const run = await api(`/api/runs/${reply.runId}`);
        localStorage.setItem(key, run.conversationId);
        conversation.stale = true;
        say("The agent waits for your decision on a tool call.");
      } else {
        localStorage.setItem(key, reply.conversationId);
        showMessage(reply.message);
      }
    }
  } catch (e) {
    say(explain(e));
  } finally {
    conversation.sending = false;
    controls.forEach((c) => (c.disabled = false));
    $("message").focus();
    // A live event (another tab's message, or this one's) asked for a refetch meanwhile.
    if (conversation.stale) {
      conversation.stale = false;
      loadConversation();
    }
    loadUsage();
  }
}

// "Today": tokens used this UTC day and what is left of the daily budget (GET /api/usage?days=1).
// data-used-tokens and data-remaining-tokens ("" when unlimited) carry the figures.
async function loadUsage() {
  const line = $("usage");
  try {
    const { budget } = await api("/api/usage?days=1");
    const used = budget.usedTokens.toLocaleString();
    const limited = budget.dailyTokens !== null;
    line.textContent = `Today: ${used} tokens` +
      (limited
        ? ` of ${budget.dailyTokens.toLocaleString()}, ${budget.remainingTokens.toLocaleString()} left`
        : " · no daily limit") +
      ` · resets ${resetTime(new Date(budget.resetsAt))}`;
    line.classList.toggle("exhausted", limited && budget.remainingTokens === 0);
    line.dataset.usedTokens = String(budget.usedTokens);
    line.dataset.remainingTokens = limited ? String(budget.remainingTokens) : "";
    line.dataset.loaded = "true";
    line.title = "Tokens used today (UTC day) against your daily budget";
  } catch (e) {
    // The rest of the page works without it.
    line.textContent = "Today: usage unavailable";
    line.title = e.message;
  }
}

function taskItem(task) {
  const li = document.createElement("li");
  li.dataset.id = task.id;
  li.dataset.status = task.status;
  li.dataset.approval = task.approvalStatus;
  const prompt = document.createElement("div");
  prompt.className = "task-prompt";
  prompt.textContent = task.prompt;
  const state = document.createElement("div");
  state.className = "task-state";
  // A task whose run waits for a decision on a tool call says so.
  const status = task.status === "awaiting_approval" ? "awaiting approval of a tool call" : task.status;
  if (task.status === "awaiting_approval") li.classList.add("awaiting");
  state.textContent = `${status} · approval ${task.approvalStatus} · due ${task.scheduledFor}` +
    (task.cron ? ` · ${task.cron} ${task.timeZone || "UTC"}` : "") +
    (task.lastError ? ` · last error: ${task.lastError}` : "");
  li.append(prompt, state);
  if (task.result) {
    const result = document.createElement("div");
    result.className = "task-result";
    result.textContent = task.result;
    li.append(result);
  }
  const actions = [];
  if (task.status === "pending" && task.approvalStatus === "pending") actions.push("approve", "reject");
  if (task.status === "pending") actions.push("cancel");
  for (const action of actions) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action;
    button.dataset.action = action;
    button.addEventListener("click", async () => {
      try {
        await api(`/api/tasks/${task.id}/${action}`, { method: "POST" });
        await loadTasks();
      } catch (e) {
        say(e.message);
      }
    });
    li.append(button);
  }
  return li;
}

// The tasks as last shown: when one changes (the scheduler ran it), usage is read again.
let shownTasks = null;

async function loadTasks() {
  try {
    const page = await api("/api/tasks?limit=50");
    $("task-list").replaceChildren(...page.tasks.map(taskItem));
    const shown = page.tasks.map((t) => `${t.id} ${t.status} ${t.updatedAt}`).join("\n");
    if (shownTasks !== null && shown !== shownTasks) loadUsage();
    shownTasks = shown;
  } catch (e) {
    say(e.message);
  }
}

async function createTask(event) {
  event.preventDefault();
  const body = { agentId: agentId(), prompt: $("task-prompt").value.trim() };
  const cron = $("task-cron").value.trim();
  const timeZone = $("task-time-zone").value.trim();
  if (cron) body.cron = cron;
  if (timeZone) body.timeZone = timeZone;
  try {
    await api("/api/tasks", { method: "POST", body, key: crypto.randomUUID() });
    $("task-prompt").value = "";
    await loadTasks();
  } catch (e) {
    say(e.message);
  }
}

// ---- tool sources (MCP servers) of an agent the user owns ----------------------------------------
// The list is replaced as a whole; a source kept as it is omits authHeader, so it keeps its own
// (the API never shows it back).
let shownSources = [];

function sourceBody(s) {
  const body = { name: s.name, url: s.url, approval: s.approval, timeoutMs: s.timeoutMs };
  if (s.allowedTools) body.allowedTools = s.allowedTools;
  return body;
}

function sourceItem(source) {
  const li = document.createElement("li");
  li.dataset.source = source.name;
  const title = document.createElement("div");
  title.textContent = `${source.name}: ${source.url}`;
  const badge = (text, cls = "") => {
    const b = document.createElement("span");
    b.className = `badge ${cls}`.trim();
    b.textContent = text;
    return b;
  };
  title.append(badge(`approval: ${source.approval}`));
  if (source.hasAuthHeader) title.append(badge("auth set"));
  if (source.allowedTools) title.append(badge(`only ${source.allowedTools.join(", ")}`));
  const tools = document.createElement("ul");
  tools.className = "source-tools";
  const list = document.createElement("button");
  list.type = "button";
  list.textContent = "Tools";
  list.addEventListener("click", async () => {
    list.disabled = true;
    tools.replaceChildren(Object.assign(document.createElement("li"), { textContent: "listing…" }));
    try {
      const listed = await api(`/api/agents/${agentId()}/tool-sources/${encodeURIComponent(source.name)}/tools`);
      tools.replaceChildren(...listed.tools.map((t) => {
        const item = document.createElement("li");
        item.dataset.tool = t.name;
        item.textContent = t.name;
        item.title = t.description;
        item.append(badge(t.requiresApproval ? "needs approval" : "runs at once", t.requiresApproval ? "approval" : ""));
        if (t.readOnly) item.append(badge("read-only"));
        if (t.idempotent) item.append(badge("idempotent"));
        return item;
      }));
      if (!listed.tools.length) tools.replaceChildren(Object.assign(document.createElement("li"), { textContent: "no tools" }));
    } catch (e) {
      tools.replaceChildren(Object.assign(document.createElement("li"), { textContent: e.message }));
    } finally {
      list.disabled = false;
    }
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.addEventListener("click", () =>
    saveSources(shownSources.filter((s) => s.name !== source.name).map(sourceBody)));
  li.append(title, list, remove, tools);
  return li;
}

function showSources(sources) {
  shownSources = sources;
  $("source-list").replaceChildren(...sources.map(sourceItem));
}

// The sources of the selected agent; the panel shows only on an agent of the user's own.
async function loadSources() {
  try {
    const { sources } = await api(`/api/agents/${agentId()}/tool-sources`);
    showSources(sources);
    $("sources").hidden = false;
  } catch (e) {
    $("sources").hidden = true;
    if (e.status !== 404) say(e.message);
  }
}

async function saveSources(sources) {
  try {
    const saved = await api(`/api/agents/${agentId()}/tool-sources`, { method: "PUT", body: { sources } });
    showSources(saved.sources);
    say("");
    return true;
  } catch (e) {
    say(e.message);
    return false;
  }
}

async function addSource(event) {
  event.preventDefault();
  const added = {
    name: $("source-name").value.trim(),
    url: $("source-url").value.trim(),
    approval: $("source-approval").value,
  };
  const auth = $("source-auth").value;
  if (auth) added.authHeader = auth;
  const allowed = $("source-allowed").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (allowed.length) added.allowedTools = allowed;
  const kept = shownSources.filter((s) => s.name !== added.name).map(sourceBody);
  if (await saveSources([...kept, added])) {
    for (const id of ["source-name", "source-url", "source-auth", "source-allowed"]) $(id).value = "";
  }
}

async function start() {
  if (!config.token) {
    say("config.json is missing: run scripts/dev");
    return;
  }
  try {
    const { agents } = await api("/api/agents");
    for (const agent of agents) {
      const option = document.createElement("option");
      option.value = agent.id;
      option.textContent = agent.name;
      option.title = agent.description;
      $("agent").append(option);
    }
    const last = localStorage.getItem("agent");
    if (last && agents.some((a) => a.id === last)) $("agent").value = last;
  } catch (e) {
    say(e.message);
    return;
  }
  $("agent").addEventListener("change", () => {
    localStorage.setItem("agent", agentId());
    loadConversation();
    loadSources();
  });
  $("new-conversation").addEventListener("click", () => {
    localStorage.removeItem(conversationKey());
    $("messages").replaceChildren();
  });
  $("send").addEventListener("submit", send);
  $("create-task").addEventListener("submit", createTask);
  $("add-source").addEventListener("submit", addSource);
  await Promise.all([loadConversation(), loadTasks(), loadUsage(), loadSources()]);
  // Results arrive when the scheduler runs: the live socket says when (no polling).
  connectLive();
  document.body.dataset.ready = "true";
}

// ---- live updates (issue 23) ------------------------------------------------------------------
// One WebSocket per page to the WebSocket API (config.liveUrl), the access token as the second
// subprotocol (never in the URL). Events are hints (ids and status): the page refetches what
// changed through the HTTP API, and everything after each (re)connect, since events sent while
// it was down are lost. Reconnects back off exponentially with jitter; only while the socket is
// down does a 30 s safety refresh of the tasks run.
const live = { socket: null, attempt: 0, safety: null, timers: {} };

function safetyRefresh(on) {
  if (on && !live.safety) live.safety = setInterval(loadTasks, 30000);
  if (!on && live.safety) {
    clearInterval(live.safety);
    live.safety = null;
  }
}

// Turns events into refetches: the first 150 ms after an event (a burst becomes one), then at
// most one every 2 s while events keep coming, so a storm of updates never costs more requests
// than the old polling did, and a quiet page costs none.
const REFETCH_AFTER_MS = 150;
const REFETCH_EVERY_MS = 2000;

function soon(name, fn) {
  const timer = live.timers[name] || (live.timers[name] = { pending: false, last: -Infinity });
  if (timer.pending) return;
  timer.pending = true;
  const wait = Math.max(REFETCH_AFTER_MS, timer.last + REFETCH_EVERY_MS - performance.now());
  setTimeout(() => {
    timer.pending = false;
    timer.last = performance.now();
    fn();
  }, wait);
}

function onLiveEvent(event) {
  // A task that changed is read again (and the usage line with it when a run spent tokens).
  if (event.type === "task.updated") soon("tasks", loadTasks);
  if (event.type === "message.created" && event.conversationId === localStorage.getItem(conversationKey())) {
    soon("messages", loadConversation);
  }
  // A reply written anywhere (another tab or device) spent tokens of today's budget.
  if (event.type === "message.created" && event.role === "assistant") soon("usage", loadUsage);
}

function connectLive() {
  if (!config.liveUrl) {
    safetyRefresh(true);
    return;
  }
  const socket = new WebSocket(config.liveUrl, ["agent-live.v1", config.token]);
  live.socket = socket;
  socket.addEventListener("open", () => {
    live.attempt = 0;
    safetyRefresh(false);
    document.body.dataset.live = "open";
    soon("tasks", loadTasks);
    soon("messages", loadConversation);
  });
  socket.addEventListener("message", (message) => {
    try {
      onLiveEvent(JSON.parse(message.data));
    } catch {
      // Not an event: ignored.
    }
  });
  socket.addEventListener("close", () => {
    if (live.socket !== socket) return;
    live.socket = null;
    document.body.dataset.live = "closed";
    safetyRefresh(true);
    // 0.5 s, 1 s, 2 s … 30 s, each with full jitter over its upper half.
    const ceiling = Math.min(30000, 500 * 2 ** live.attempt++);
    setTimeout(connectLive, ceiling / 2 + Math.random() * (ceiling / 2));
  });
}

// API Gateway closes a connection idle for 10 minutes: a ping every 5 keeps it.
setInterval(() => {
  if (live.socket && live.socket.readyState === WebSocket.OPEN) live.socket.send('{"action":"ping"}');
}, 300000);
// ---- end of live updates ----------------------------------------------------------------------

start();
