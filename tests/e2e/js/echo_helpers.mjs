// The OpenAI JS SDK's stream helpers against a gateway: node echo_helpers.mjs <sdk dir> <base url> <key> <model>
// Prints one JSON line with what each helper rebuilt.
const [sdkDir, baseURL, apiKey, model] = process.argv.slice(2);
const { default: OpenAI } = await import(`${sdkDir}/index.mjs`);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const types = [];
const responses = client.responses.stream({ model, input: "one two three" });
for await (const ev of responses) types.push(ev.type);
const final = await responses.finalResponse();

const chat = client.chat.completions.stream({ model, messages: [{ role: "user", content: "four five" }] });
const deltas = [];
chat.on("content.delta", (ev) => deltas.push(ev.delta));
const completion = await chat.finalChatCompletion();

console.log(JSON.stringify({
  types, output_text: final.output_text, status: final.status,
  chat: completion.choices[0].message.content, deltas,
}));
