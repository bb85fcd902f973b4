// The browser bundle's size: src/ bundled and minified by esbuild (`ws`, which a browser
// never loads, left out), then gzipped.
//   node bench/size.mjs
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const result = await build({
  entryPoints: [new URL("../src/index.js", import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  external: ["ws"],
  write: false,
});
const code = result.outputFiles[0].contents;
const gzipped = gzipSync(code, { level: 9 }).length;
console.log(`browser bundle: ${code.length} bytes minified, ${gzipped} bytes (${(gzipped / 1024).toFixed(1)} KiB) minified and gzipped`);
if (gzipped > 8 * 1024) {
  console.error("over the 8 KiB budget");
  process.exitCode = 1;
}
