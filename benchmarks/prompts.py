# ruff: noqa: RUF001  (full-width CJK punctuation is the point of these prompts)
"""A varied corpus of prompts for the token-estimation benchmark and the tokens tests.

Each entry is ``(kind, text)``. The kinds cover what reaches an LLM in practice: chat turns,
code, JSON and other structured text, logs, numbers and identifiers, and text in several
languages and scripts (German, French, Spanish, Chinese, Japanese, Korean, Russian, Arabic,
Hindi) and emoji. Entries are written here (no downloads) so the benchmark is reproducible.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random

__all__ = ["CORPUS", "KINDS", "corpus"]

_CHAT = [
    "Hi! Can you help me plan a three-day trip to Lisbon in early May? I like food, "
    "history and walking, but I don't want to spend more than about 600 euros in total.",
    "Summarize the following meeting notes in five bullet points, keeping every decision "
    "and owner: Anna will finish the Q3 budget by Friday; we postponed the vendor review "
    "to next sprint; Raj asked whether the staging cluster can be shut down at night.",
    "You are a helpful assistant that answers questions about our internal HR policies. "
    "Answer only from the provided context. If the answer is not in the context, say that "
    "you don't know and suggest contacting hr@example.com.",
    "What's the difference between a mutex and a semaphore? Please explain it like I'm a "
    "junior developer, with a short example of when I'd pick each one.",
    "Thanks, that worked. One more thing: how do I make the script skip files that "
    "haven't changed since the last run? I'd rather not keep a database for this.",
    "Rewrite this email so it sounds friendlier but still firm: 'Your invoice is 45 days "
    "overdue. Pay it by Monday or we will suspend the account.'",
    "I'm getting 'ModuleNotFoundError: No module named yaml' even though I ran pip install "
    "pyyaml. I'm on macOS with Homebrew Python 3.12 and a virtualenv. What's going on?",
    "Translate to plain English: 'The party of the first part shall indemnify and hold "
    "harmless the party of the second part from any and all claims arising hereunder.'",
    "ok so basically my cat keeps knocking stuff off the table lol, is that normal?? she's "
    "2yo, indoor only, super playful at night. any tips that actually work",
    "Write a haiku about debugging at 3am.",
]

_CODE = [
    '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    if n <= 0:
        return []
    seq = [0, 1]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    return seq[:n]


if __name__ == "__main__":
    print(fibonacci(10))
''',
    """class LRUCache:
    def __init__(self, capacity):
        self.capacity = capacity
        self.data = OrderedDict()

    def get(self, key):
        if key not in self.data:
            return -1
        self.data.move_to_end(key)
        return self.data[key]

    def put(self, key, value):
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.capacity:
            self.data.popitem(last=False)
""",
    """import React, { useState, useEffect } from 'react';

export default function Timer({ seconds = 60, onDone }) {
  const [left, setLeft] = useState(seconds);
  useEffect(() => {
    if (left <= 0) { onDone?.(); return; }
    const id = setTimeout(() => setLeft(l => l - 1), 1000);
    return () => clearTimeout(id);
  }, [left, onDone]);
  return <span className="timer">{Math.floor(left / 60)}:{String(left % 60).padStart(2, '0')}</span>;
}
""",
    """SELECT c.customer_id, c.name, SUM(o.total_cents) / 100.0 AS revenue_usd,
       COUNT(DISTINCT o.order_id) AS orders
FROM customers c
JOIN orders o ON o.customer_id = c.customer_id
WHERE o.created_at >= DATE '2024-01-01' AND o.status IN ('paid', 'shipped')
GROUP BY c.customer_id, c.name
HAVING COUNT(*) > 3
ORDER BY revenue_usd DESC
LIMIT 25;
""",
    """#!/usr/bin/env bash
set -euo pipefail
for f in "${SRC_DIR:-./src}"/*.log; do
  [[ -s "$f" ]] || continue
  gzip -9 "$f" && mv "$f.gz" /var/archive/"$(date +%Y%m%d)"-"$(basename "$f")".gz
done
echo "archived $(ls /var/archive | wc -l) files" >&2
""",
    """fn parse_header(buf: &[u8]) -> Result<(u16, usize), ParseError> {
    if buf.len() < 4 {
        return Err(ParseError::Short { need: 4, got: buf.len() });
    }
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    Ok((kind, len))
}
""",
    """    @pytest.mark.parametrize("value,expected", [(0, "zero"), (1, "one"), (-7, "negative")])
    def test_describe(self, value, expected):
        assert describe(value) == expected
        assert isinstance(describe(value), str)
""",
    """Traceback (most recent call last):
  File "/app/server.py", line 88, in handle
    payload = json.loads(request.body)
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)
""",
]

_JSON_OBJECTS = [
    {
        "id": "evt_01HZX3K9Q2",
        "type": "invoice.paid",
        "created": 1717171717,
        "data": {
            "amount": 4999,
            "currency": "usd",
            "customer": "cus_9s8d7f6g",
            "lines": [{"sku": "PRO-M", "qty": 1}, {"sku": "ADDON-SEATS", "qty": 4}],
        },
        "livemode": False,
    },
    {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
    {
        "users": [
            {
                "id": i,
                "name": n,
                "email": f"{n.lower()}@example.org",
                "active": i % 3 != 0,
                "score": round(17.5 * i / 3, 2),
            }
            for i, n in enumerate(["Alice", "Bob", "Chandra", "Dmitri", "Eve", "Fatima"])
        ]
    },
]

_STRUCTURED = [
    json.dumps(_JSON_OBJECTS[0]),
    json.dumps(_JSON_OBJECTS[1], indent=2),
    json.dumps(_JSON_OBJECTS[2]),
    json.dumps(_JSON_OBJECTS[2], indent=4),
    """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: frontend}
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: web
          image: ghcr.io/example/web:1.14.2
          ports: [{containerPort: 8080}]
          resources: {limits: {cpu: 500m, memory: 256Mi}}
""",
    """# Release notes

## 2.3.0 (2024-06-02)

- **Breaking:** `Client.fetch()` now returns a `Response` object instead of a dict.
- Added `--dry-run` to the CLI ([#412](https://github.com/example/tool/pull/412)).
- Fixed a crash when `HOME` is unset.

| Platform | Status |
|----------|--------|
| Linux    | ✅     |
| Windows  | ⚠️ beta |
""",
    """<html><head><title>Order #10234</title></head><body>
<div class="order" data-id="10234"><p>Thank you, <b>Maria</b>! Your order ships on
<time datetime="2024-07-04">July 4</time>.</p><a href="/orders/10234?ref=email&amp;t=1">Track it</a></div>
</body></html>""",
]

_LOGS_AND_NUMBERS = [
    """2024-05-30T12:01:44.123Z INFO  [worker-3] job=sync-accounts took=1843ms rows=12044
2024-05-30T12:01:45.007Z WARN  [worker-1] retrying request id=7f3a2c attempt=2/5 status=503
2024-05-30T12:01:47.552Z ERROR [worker-1] giving up id=7f3a2c: upstream timeout after 30000ms
192.168.14.22 - - [30/May/2024:12:01:48 +0000] "GET /api/v2/items?page=3 HTTP/1.1" 200 5123
""",
    """date,region,units,revenue,margin
2024-01-31,EMEA,1284,93211.50,0.312
2024-01-31,APAC,877,61002.75,0.287
2024-02-29,EMEA,1402,101334.10,0.305
2024-02-29,NA,2210,187420.00,0.341
2024-03-31,APAC,951,66570.25,0.29
""",
    "Compute 1234567 * 89101112 and then add 3.14159265358979 to the result; also convert "
    "0x7fffffff and 0b101101 to decimal, and round 2.718281828459045 to 4 places.",
    "Phone: +1 (415) 555-0132, order 2024-000183-77, tracking 1Z999AA10123456784, "
    "IBAN DE89 3704 0044 0532 0130 00, card ending 4242, due 2024-08-15 23:59 UTC.",
]


def _identifiers() -> list[str]:
    """Hashes, UUID-like ids, base64 blobs: dense text that tokenizes poorly."""
    rng = random.Random(7)
    blob = bytes(rng.randrange(256) for _ in range(240))
    hexes = " ".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(4))
    uuids = "\n".join(
        "-".join(
            hashlib.md5(str(i).encode()).hexdigest()[a:b]
            for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
        )
        for i in range(8)
    )
    return [
        "Check these commit hashes: " + hexes,
        "request ids:\n" + uuids,
        "Decode this attachment: " + base64.b64encode(blob).decode(),
        "https://example.com/search?q=token+budget&sort=desc&page=2&utm_source=newsletter"
        "&utm_medium=email&sessionid=a8f3k2m9x7q1 and https://cdn.example.net/assets/"
        "img/2024/06/hero_banner@2x.webp?v=9f8e7d",
    ]


_LANGUAGES = [
    (
        "german",
        "Können Sie mir bitte erklären, wie die Kündigungsfrist bei einem unbefristeten "
        "Arbeitsvertrag in Deutschland berechnet wird? Ich habe vor drei Jahren "
        "angefangen und möchte zum Monatsende aufhören. Außerdem frage ich mich, ob "
        "mein Resturlaub ausgezahlt wird oder verfällt.",
    ),
    (
        "german",
        "Die Straßenbahnhaltestelle wurde wegen Bauarbeiten vorübergehend verlegt; "
        "Fahrgäste werden gebeten, die Ersatzhaltestelle gegenüber dem Rathaus zu "
        "nutzen. Wir entschuldigen uns für die Unannehmlichkeiten.",
    ),
    (
        "french",
        "Bonjour ! Pourriez-vous m'aider à rédiger une lettre de réclamation à mon "
        "propriétaire ? Le chauffage ne fonctionne plus depuis trois semaines et il "
        "fait très froid dans l'appartement, surtout la nuit.",
    ),
    (
        "spanish",
        "¿Cuál es la mejor manera de aprender a programar si nunca lo he hecho? "
        "Tengo unas dos horas al día, después del trabajo, y me interesa sobre todo "
        "el análisis de datos. ¡Gracias de antemano!",
    ),
    (
        "chinese",
        "请帮我把下面这段话翻译成英文，并且保持正式的语气：我们非常重视您的反馈，"
        "技术团队已经在调查这个问题，预计会在本周五之前给出解决方案。如果您还有其他"
        "疑问，请随时与我们联系。",
    ),
    (
        "chinese",
        "机器学习模型在训练过程中可能出现过拟合现象，也就是说模型在训练集上表现很好，"
        "但在测试集上表现较差。常见的解决方法包括增加数据量、使用正则化以及提前停止。",
    ),
    (
        "chinese",
        "我們的客服團隊會在兩個工作天內回覆您的問題。如果情況緊急，請直接撥打客服專線，"
        "並提供您的訂單編號，以便我們盡快為您處理。",
    ),
    ("chinese", "魑魅魍魉、饕餮、麒麟和貔貅都是中国古代神话中的生物，它们的名字里有不少生僻字。"),
    (
        "japanese",
        "お世話になっております。先日ご依頼いただいた見積書を添付いたしましたので、"
        "ご確認のほどよろしくお願いいたします。ご不明な点がございましたら、"
        "お気軽にお問い合わせください。",
    ),
    (
        "japanese",
        "このプログラムはファイルを読み込んで、各行の単語数を数え、結果をJSON形式で"
        "出力します。エラーが発生した場合はログに記録されます。",
    ),
    (
        "korean",
        "안녕하세요! 다음 주 화요일 오후 세 시에 회의실을 예약하고 싶은데, 가능한지 "
        "확인해 주실 수 있을까요? 참석 인원은 여덟 명입니다.",
    ),
    (
        "russian",
        "Здравствуйте! Подскажите, пожалуйста, как правильно настроить резервное "
        "копирование базы данных PostgreSQL на отдельный сервер, чтобы можно было "
        "восстановить данные на любой момент времени за последнюю неделю?",
    ),
    (
        "russian",
        "Достопримечательности Санкт-Петербурга привлекают миллионы туристов ежегодно, "
        "особенно в период белых ночей.",
    ),
    (
        "arabic",
        "مرحبا، أريد أن أحجز غرفة لشخصين في فندق قريب من وسط المدينة لمدة ثلاث ليال "
        "ابتداء من يوم الخميس القادم. هل يمكنك أن تقترح بعض الخيارات بأسعار معقولة؟",
    ),
    (
        "arabic",
        "الذكاء الاصطناعي هو فرع من علوم الحاسوب يهتم بإنشاء أنظمة قادرة على التعلم "
        "والاستنتاج واتخاذ القرارات.",
    ),
    (
        "hindi",
        "नमस्ते! क्या आप मुझे बता सकते हैं कि दिल्ली से जयपुर जाने के लिए सबसे अच्छा "
        "रास्ता कौन सा है? मैं सप्ताहांत में परिवार के साथ यात्रा करना चाहता हूँ।",
    ),
    (
        "emoji",
        "Great job team!!! 🎉🎉🎉 The launch went live at 9am 🚀 and we already have "
        "1,200 signups 📈🔥 Thanks everyone 🙏❤️ #shipit",
    ),
    ("emoji", "👨‍👩‍👧‍👦🏳️‍🌈👩🏽‍💻🧑🏿‍🚀🇯🇵🇩🇪🇧🇷 family, pride, dev, astronaut, flags"),
    ("emoji", "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗☺️😚😙🥲😋😛😜🤪😝🤑🤗🤭"),
    (
        "mixed",
        "User: 这个函数为什么报错？\n```python\nprint(len(None))\n```\nAssistant: "
        "`None` 没有长度，所以 `len(None)` 会抛出 TypeError。Проверьте входные данные. 👍",
    ),
    (
        "mixed",
        "Das Meeting (会议) ist am 12.03. um 14:30 Uhr — bitte bringt eure Laptops 💻 mit; "
        "agenda: 1) KPIs 2) roadmap 3) Q&A. Merci, ¡hasta luego! Спасибо!",
    ),
]


def _build() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [("chat", t) for t in _CHAT]
    out += [("code", t) for t in _CODE]
    out += [("structured", t) for t in _STRUCTURED]
    out += [("logs+numbers", t) for t in _LOGS_AND_NUMBERS]
    out += [("identifiers", t) for t in _identifiers()]
    out += list(_LANGUAGES)
    # A long multi-turn conversation: many short turns joined, as an agent history looks.
    history = "\n".join(
        f"{'user' if i % 2 == 0 else 'assistant'}: {t}" for i, t in enumerate(_CHAT * 2)
    )
    out.append(("chat", history))
    return out


CORPUS: list[tuple[str, str]] = _build()
KINDS: list[str] = sorted({kind for kind, _ in CORPUS})


def corpus() -> list[tuple[str, str]]:
    """A fresh copy of the corpus, ``(kind, text)`` pairs."""
    return list(CORPUS)
