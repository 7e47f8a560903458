"""Build the embedded tiny ChatML tokenizer (dynamo_mono/assets/tiny-chatml) byte-identically on every run.

Usage: python -m dynamo_mono.assets.make_tiny_chatml OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

VOCAB_SIZE = 3072
SEED = 20240607

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not special (kept by skip_special_tokens), as in Qwen2.5 / Qwen3.
PLAIN_ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
# Media placeholders with Qwen3-VL / Qwen3-Omni's names (special, as there): the template below emits
# <|vision_start|><|image_pad|><|vision_end|> for an image part (video, audio alike), and the server expands each
# *_pad token to as many tokens as the model card says the item takes (the mocker's --mocker-input-modalities).
MEDIA_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|audio_start|>",
                "<|audio_end|>", "<|audio_pad|>"]

# Qwen2's pre-tokenizer split: contractions, letter runs, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-style ChatML template: system prompt (with hermes tool instructions), assistant tool calls as
# <tool_call>{json}</tool_call>, tool results as <tool_response> inside a user turn, thinking blocks.
CHAT_TEMPLATE = r"""{%- macro render_content(content) -%}
    {%- if content is none -%}
    {%- elif content is string -%}
        {{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content -%}
            {%- if part is string -%}
                {{- part -}}
            {%- elif part is mapping and part.type == 'text' -%}
                {{- part.text -}}
            {%- elif part is mapping and part.type == 'image' -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif part is mapping and part.type == 'video' -%}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
            {%- elif part is mapping and part.type == 'audio' -%}
                {{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- content | string -}}
    {%- endif -%}
{%- endmacro -%}
{%- if messages | length == 0 %}
    {{- raise_exception('Conversation must contain at least one message.') }}
{%- endif %}
{%- set has_system = messages[0].role in ['system', 'developer'] %}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if has_system %}
        {{- render_content(messages[0].content) + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif has_system %}
    {{- '<|im_start|>system\n' + render_content(messages[0].content) + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- set text = message.content if message.content is string else render_content(message.content) %}
    {%- if ns.multi_step_tool and message.role == 'user' and not (text.startswith('<tool_response>') and text.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else render_content(message.content) %}
    {%- if message.role in ['system', 'developer'] %}
        {%- if not loop.first %}
            {{- '<|im_start|>system\n' + content + '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role == 'user' %}
        {{- '<|im_start|>user\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('Unexpected message role: ' + (message.role | string)) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""

_WORDS = (
    "the of and to in is that it for on was with as be at by this have from or one had not but what all were "
    "when we there can an your which their said if do will each about how up out them then she many some so "
    "these would other into has more her two like him see time could no make than first been its who now "
    "people my made over did down only way find use may water long little very after words called just where "
    "most know get through back much before go good new write our used me man too any day same right look "
    "think also around another came come work three word must because does part even place well such here "
    "take why things help put years different away again off went old number great tell men say small every "
    "found still between name should home big give air line set own under read last never us left end along "
    "while might next sound below saw something thought both few those always looked show large often together "
    "asked house world going want school important until form food keep children feet land side without boy "
    "once animals life enough took sometimes four head above kind began almost live page got earth need far "
    "hand high year mother light parts country father let night following picture being study second eyes soon "
    "times story boys since white days ever paper hard near sentence better best across during today others "
    "however sure means knew try told young miles sun ways thing whole hear example heard several change answer "
    "room sea against top turned learn point city play toward five using himself usually model server request "
    "token tokens cache router engine worker latency throughput prompt response stream batch queue schedule "
    "memory block hash prefix decode prefill request model inference assistant user system tool function call "
    "weather temperature location search query result results error message content question answer reasoning"
).split()
_NAMES = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Victor".split()
_CITIES = "Paris London Tokyo Berlin Madrid Rome Oslo Lisbon Seoul Lima Cairo Sydney Toronto Dublin Prague".split()
_MULTIBYTE = (
    "café naïve résumé façade jalapeño über Straße Ångström crème brûlée déjà vu São Paulo Zürich Kraków "
    "東京 日本語 中文 你好 世界 こんにちは ありがとう 안녕하세요 감사합니다 Привет мир Здравствуйте "
    "Γειά σου κόσμε مرحبا بالعالم שלום עולם नमस्ते दुनिया ☀️ 🌧️ 😀 🚀 👍 🎉 ❤️ 🤖 ✅ ∑ ∞ ≈ ≠ → ← ± × ÷ € £ ¥ °C"
).split()
_CODE = [
    "def {f}(x, y):\n    return x {op} y\n",
    "for i in range({n}):\n    total += values[i] * {n2}\n",
    "if (count > {n}) {{\n    return -1;\n}}\n",
    "const {f} = async (req, res) => {{\n  const data = await fetch(url);\n  return data.json();\n}};\n",
    "class {F}:\n    def __init__(self, name: str) -> None:\n        self.name = name\n",
    "SELECT id, name FROM users WHERE age > {n} ORDER BY name;\n",
    "import json\nprint(json.dumps({{\"key\": {n}, \"ok\": True}}))\n",
    "fn {f}(a: u32, b: u32) -> u32 {{ a {op} b }}\n",
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(_NAMES))
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(_CITIES))
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), rng.choice(_MULTIBYTE))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!", ","])


def _json_line(rng: random.Random) -> str:
    obj = {
        "name": rng.choice(["get_weather", "search", "calculate", "lookup_user", "send_email"]),
        "arguments": {
            "location": rng.choice(_CITIES),
            "unit": rng.choice(["celsius", "fahrenheit"]),
            "count": rng.randint(0, 1000),
            "score": round(rng.uniform(-100, 100), rng.randint(0, 4)),
        },
    }
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5)


def _code(rng: random.Random) -> str:
    f = "_".join(rng.choice(_WORDS) for _ in range(2))
    return rng.choice(_CODE).format(
        f=f, F=f.title().replace("_", ""), op=rng.choice("+-*/%"), n=rng.randint(0, 9999), n2=rng.randint(1, 99)
    )


def corpus(lines: int = 16000, seed: int = SEED) -> list[str]:
    """A deterministic mixed corpus: English-like prose, code, numbers, JSON and multi-byte text."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.55:
            out.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 4))))
        elif kind < 0.7:
            out.append(_code(rng))
        elif kind < 0.8:
            out.append(_json_line(rng))
        elif kind < 0.9:
            out.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 8))) for _ in range(rng.randint(2, 8))))
        elif kind < 0.95:
            out.append(" ".join(rng.choice(_MULTIBYTE) for _ in range(rng.randint(3, 10))))
        else:
            role = rng.choice(["system", "user", "assistant", "tool"])
            out.append(f"{role}\n{_sentence(rng)}\n")
    return out


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MEDIA_TOKENS])
    return tok


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def build(out_dir: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json, config.json and generation_config.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    added = SPECIAL_TOKENS + PLAIN_ADDED_TOKENS + MEDIA_TOKENS
    ids = {t: tok.token_to_id(t) for t in added}
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    added_tokens_decoder = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t not in PLAIN_ADDED_TOKENS,
        }
        for t in added
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 8192,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    # A complete (tiny) Qwen2 config so an engine can instantiate random weights from it if it wants to.
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "hidden_act": "silu",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "vocab_size": vocab_size,
    }
    generation_config = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(_dump(tokenizer_config), encoding="utf-8")
    (out / "config.json").write_text(_dump(config), encoding="utf-8")
    (out / "generation_config.json").write_text(_dump(generation_config), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dynamo_mono.assets.make_tiny_chatml OUT_DIR", file=sys.stderr)
        return 2
    print(build(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
