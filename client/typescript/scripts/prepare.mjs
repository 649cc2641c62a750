// npm's `prepare` script: builds dist/ when this directory is installed into another project
// (`npm install /path/to/wfe-sqlite/client/typescript`) or packed (`npm pack`, `npm publish`).
//
// npm runs it there without this package's devDependencies (buf, protoc-gen-es, typescript), so
// when they are missing they are installed first with `npm ci` (pinned by package-lock.json);
// then `npm run build` generates the stubs from ../../protos and compiles. In this package's own
// `npm ci` / `npm install` (run-tests.sh, `make lint-typescript`, development) it does nothing:
// `npm run build`, `npm test` and `npm run lint` generate and compile when they need to.
import { spawnSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const NESTED = "WFE_SQLITE_CLIENT_PREPARING";

function samePath(a, b) {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

function npm(args, env = process.env) {
  // The children's stdout goes to stderr: `npm pack` prints the tarball's name on stdout.
  const result = spawnSync("npm", args, { cwd: root, stdio: ["ignore", 2, 2], env });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    console.error(`@wfe-sqlite/client prepare: 'npm ${args.join(" ")}' failed in ${root}`);
    process.exit(result.status ?? 1);
  }
}

const command = process.env.npm_command ?? "";
const ownInstall = (command === "ci" || command === "install") && samePath(process.env.INIT_CWD ?? "", root);
if (process.env[NESTED] !== undefined || ownInstall) process.exit(0);

const tools = ["buf", "protoc-gen-es", "tsc"].map((tool) => join(root, "node_modules", ".bin", tool));
if (!tools.every((tool) => existsSync(tool))) {
  npm(["ci", "--no-audit", "--no-fund", "--loglevel=error"], { ...process.env, [NESTED]: "1" });
}
npm(["run", "--silent", "build"]);
