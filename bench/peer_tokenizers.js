// Peer figure for bench_tokenizer: the official Hugging Face `tokenizers` (Rust, via its npm
// binding) encoding the same HH-RLHF texts on one thread (RAYON_NUM_THREADS=1, one batch call).
//   npm install tokenizers@0.23.2   (in this directory or any parent)
//   RAYON_NUM_THREADS=1 node bench/peer_tokenizers.js TOKENIZER.json DATA.jsonl.gz
const fs = require('fs');
const zlib = require('zlib');
const { Tokenizer } = require('tokenizers');
(async () => {
  const [tokPath, dataPath] = process.argv.slice(2);
  const raw = zlib.gunzipSync(fs.readFileSync(dataPath)).toString('utf8');
  const texts = [];
  for (const line of raw.split('\n')) {
    if (!line) continue;
    const row = JSON.parse(line);
    texts.push(row.chosen, row.rejected);
  }
  const tok = Tokenizer.fromFile(tokPath);
  let best = Infinity, tokens = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    tokens = encs.reduce((n, e) => n + e.getIds().length, 0);
    best = Math.min(best, s);
  }
  console.log(`HF tokenizers (Rust): ${texts.length} texts, ${tokens} tokens, ${best.toFixed(3)} s, ` +
              `${Math.round(tokens / best)} tokens/s`);
})();
