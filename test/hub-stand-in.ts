/**
 * A Hugging Face hub stand-in on loopback: the three calls a model download makes (model info with
 * its commit, the recursive file tree, and `resolve` with Range requests), served from files in
 * memory. Tests point `hubUrl` at it; nothing leaves the machine.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export const STAND_IN_COMMIT = 'c0ffee'.padEnd(40, '0');

export interface TreeEntry {
  type: string;
  path: string;
  size: unknown;
  oid?: unknown;
  lfs?: { oid: unknown; size: unknown };
}

export interface StandIn {
  url: string;
  /** Every request's method, path and Range header, in order. */
  requests: { path: string; range: string | undefined }[];
  /** The tree the hub lists (edit it to lie about files). */
  tree: TreeEntry[];
  /** Bytes served for a path instead of the real ones (corruption, a changed upload). */
  serve: Map<string, Buffer>;
  close(): Promise<void>;
}

const gitBlobSha1 = (bytes: Buffer) => createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');

/** The hub's tree entry of a file: safetensors as LFS (sha256), the rest as git blobs (sha1). */
export function treeEntry(file: string, bytes: Buffer): TreeEntry {
  return file.endsWith('.safetensors')
    ? { type: 'file', path: file, size: 134, oid: gitBlobSha1(Buffer.from('pointer')), lfs: { oid: createHash('sha256').update(bytes).digest('hex'), size: bytes.length } }
    : { type: 'file', path: file, size: bytes.length, oid: gitBlobSha1(bytes) };
}

/** Serves `files` as the model `repo` at STAND_IN_COMMIT (its `main`). */
export async function startHubStandIn(repo: string, files: Map<string, Buffer>): Promise<StandIn> {
  const requests: StandIn['requests'] = [];
  const tree = [...files].map(([file, bytes]) => treeEntry(file, bytes));
  const serve = new Map<string, Buffer>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    requests.push({ path: url.pathname, range: req.headers.range });
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === `/api/models/${repo}/revision/main`) return json(200, { _id: 'stand-in', id: repo, sha: STAND_IN_COMMIT, private: false });
    if (url.pathname === `/api/models/${repo}/tree/${STAND_IN_COMMIT}`) return json(200, tree);
    const prefix = `/${repo}/resolve/${STAND_IN_COMMIT}/`;
    const file = url.pathname.startsWith(prefix) ? decodeURIComponent(url.pathname.slice(prefix.length)) : null;
    const bytes = file === null ? undefined : serve.get(file) ?? files.get(file);
    if (bytes === undefined) {
      res.writeHead(404, { 'x-error-code': 'EntryNotFound' });
      return res.end();
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const etag = `"${treeEntry(file!, files.get(file!) ?? bytes).lfs?.oid ?? gitBlobSha1(bytes)}"`;
    if (range === null) {
      res.writeHead(200, { 'content-length': bytes.length, etag });
      return res.end(bytes);
    }
    const start = Number(range[1]);
    const end = range[2] === '' ? bytes.length - 1 : Math.min(Number(range[2]), bytes.length - 1);
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${bytes.length}`, 'content-length': end - start + 1, etag });
    res.end(bytes.subarray(start, end + 1));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    tree,
    serve,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A checkpoint folder's files, by name. */
export function folderFiles(dir: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f))]));
}
