/**
 * Models by name: `org/name` resolves to a snapshot folder of the Hugging Face cache
 * (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
 * huggingface_hub lays it out: `models--org--name/{refs,snapshots,blobs}`). Online, the files a
 * checkpoint needs are downloaded with @huggingface/hub's API calls into that layout: resumable
 * (a partial blob continues with a range request), each verified by size and hash (sha256 of an
 * LFS file, git's blob sha1 otherwise), published by rename. `HF_HUB_OFFLINE=1` uses the cache only.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { downloadFile, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { CorematchingError } from './errors.js';

export interface HubOptions {
  /** Use the cache only (default: HF_HUB_OFFLINE). */
  offline?: boolean;
  /** The hub cache folder (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** A branch, tag or commit (default main). */
  revision?: string;
  /** The hub's address (default: HF_ENDPOINT, else https://huggingface.co). */
  hubUrl?: string;
  /** An access token (default: HF_TOKEN). */
  token?: string;
  /** Called as bytes arrive: (file, bytes done, bytes of the file). */
  onDownload?: (file: string, done: number, total: number) => void;
}

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;
const COMMIT = /^[0-9a-f]{40}$/;
/** What a checkpoint folder needs: configs, tokenizer and template files, safetensors weights. */
const NEEDED = /(^|\/)[^/]+\.(json|jinja|safetensors|txt|model)$/;

/** Whether `name` reads as a hub model id (org/name) rather than a folder. */
export function isRepoId(name: string): boolean {
  return REPO_ID.test(name) && !name.includes('..') && !fs.existsSync(name);
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  return path.join(env.HF_HOME || path.join(os.homedir(), '.cache', 'huggingface'), 'hub');
}

export function offlineFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['1', 'true', 'yes', 'on'].includes((env.HF_HUB_OFFLINE ?? '').trim().toLowerCase());
}

const repoFolder = (cacheDir: string, repo: string) => path.join(cacheDir, `models--${repo.replace('/', '--')}`);

/** The cached snapshot of `revision` (a commit, or a ref written under refs/), if it has a config.json. */
export function cachedSnapshot(cacheDir: string, repo: string, revision: string): string | null {
  const folder = repoFolder(cacheDir, repo);
  let commit = revision;
  if (!COMMIT.test(revision)) {
    const ref = path.join(folder, 'refs', revision);
    if (!fs.existsSync(ref)) return null;
    commit = fs.readFileSync(ref, 'utf8').trim();
  }
  const snapshot = path.join(folder, 'snapshots', commit);
  return fs.existsSync(path.join(snapshot, 'config.json')) ? snapshot : null;
}

/** A folder for `name`: the folder itself, or the snapshot of a hub model id (downloaded when online and needed). */
export async function resolveModelDir(name: string, options: HubOptions = {}): Promise<string> {
  if (!isRepoId(name)) return name;
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const revision = options.revision ?? 'main';
  const cached = cachedSnapshot(cacheDir, name, revision);
  if (options.offline ?? offlineFromEnv()) {
    if (cached !== null) return cached;
    throw new CorematchingError(`${name}: no such folder, and as a hub model id (revision ${revision}) it is not in the Hugging Face cache at ${cacheDir}; HF_HUB_OFFLINE is set, so nothing is downloaded (unset it, or pass a checkpoint folder)`);
  }
  const credentials = {
    hubUrl: options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co',
    ...((options.token ?? process.env.HF_TOKEN) ? { accessToken: options.token ?? process.env.HF_TOKEN } : {}),
  };
  let commit: string;
  let files: ListFileEntry[];
  try {
    const info = await modelInfo({ name, revision, additionalFields: ['sha'], ...credentials });
    commit = String((info as { sha?: unknown }).sha ?? '');
    if (!COMMIT.test(commit)) throw new Error(`the hub answered no commit for ${revision}`);
    files = [];
    for await (const entry of listFiles({ repo: name, revision: commit, recursive: true, ...credentials })) {
      if (entry.type === 'file' && NEEDED.test(entry.path)) files.push(entry);
    }
  } catch (err) {
    // Unreachable hub: a cached snapshot still serves, as huggingface_hub does.
    if (cached !== null && isNetworkError(err)) return cached;
    throw new CorematchingError(`${name}: no such folder, and as a hub model id it cannot be fetched from ${credentials.hubUrl}: ${(err as Error).message}`);
  }
  if (!files.some((f) => f.path.endsWith('.safetensors'))) {
    throw new CorematchingError(`${name} has no .safetensors weights at ${commit.slice(0, 12)}; this engine reads safetensors only`);
  }
  const folder = repoFolder(cacheDir, name);
  const snapshot = path.join(folder, 'snapshots', commit);
  for (const file of files) {
    await fetchFile(name, commit, file, folder, snapshot, credentials, options.onDownload).catch((err: Error) => {
      throw err instanceof CorematchingError ? err : new CorematchingError(`${name}: cannot store ${file.path} under ${folder}: ${err.message}`);
    });
  }
  if (!COMMIT.test(revision)) {
    fs.mkdirSync(path.join(folder, 'refs'), { recursive: true });
    const ref = path.join(folder, 'refs', revision);
    fs.writeFileSync(`${ref}.tmp`, commit);
    fs.renameSync(`${ref}.tmp`, ref);
  }
  return snapshot;
}

function isNetworkError(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } }).cause;
  return err instanceof TypeError || ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET'].includes(cause?.code ?? '');
}

/** One file into blobs/<etag> (resumed, verified) with its snapshot link. */
async function fetchFile(
  repo: string,
  commit: string,
  file: ListFileEntry,
  folder: string,
  snapshot: string,
  credentials: { hubUrl: string; accessToken?: string },
  onDownload?: HubOptions['onDownload'],
): Promise<void> {
  if (file.path.split('/').some((part) => part === '..' || part === '')) throw new CorematchingError(`${repo}: refusing the file name ${JSON.stringify(file.path)}`);
  const size = file.lfs?.size ?? file.size;
  if (!Number.isSafeInteger(size) || size < 0) throw new CorematchingError(`${repo}: ${file.path} is listed with no usable size (${JSON.stringify(size)})`);
  const etag = file.lfs?.oid ?? file.oid ?? '';
  if (!/^[0-9a-f]{40,64}$/.test(etag)) throw new CorematchingError(`${repo}: ${file.path} has no usable hash (${JSON.stringify(etag)})`);
  const link = path.join(snapshot, file.path);
  const blob = path.join(folder, 'blobs', etag);
  if (fs.existsSync(link) && fs.statSync(link).size === size) return;
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  if (!(fs.existsSync(blob) && fs.statSync(blob).size === size)) {
    const partial = `${blob}.incomplete`;
    let have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
    if (have > size) {
      fs.rmSync(partial);
      have = 0;
    }
    if (have < size) {
      const remote = await downloadFile({ repo, path: file.path, revision: commit, ...credentials }).catch((err: Error) => {
        throw new CorematchingError(`${repo}: cannot download ${file.path}: ${err.message}`);
      });
      if (remote === null) throw new CorematchingError(`${repo}: ${file.path} is listed but cannot be downloaded`);
      let done = have;
      // A server that sends more than the listing said is cut off there: a download never grows past its file's size.
      const counted = Readable.fromWeb(remote.slice(have).stream() as import('node:stream/web').ReadableStream).on('data', (chunk: Buffer) => {
        done += chunk.length;
        if (done > size) counted.destroy(new CorematchingError(`${repo}: ${file.path} sent more than its listed ${size} bytes`));
        else onDownload?.(file.path, done, size);
      });
      try {
        await pipeline(counted, fs.createWriteStream(partial, { flags: 'a' }));
      } catch (err) {
        if (err instanceof CorematchingError) {
          fs.rmSync(partial, { force: true });
          throw err;
        }
        throw new CorematchingError(`${repo}: the download of ${file.path} broke off after ${done} of ${size} bytes (${(err as Error).message}); run again to resume it`);
      }
    }
    const got = fs.statSync(partial).size;
    const hash = await fileHash(partial, file.lfs ? 'sha256' : 'git-sha1', got);
    if (got !== size || hash !== etag) {
      fs.rmSync(partial);
      throw new CorematchingError(`${repo}: ${file.path} arrived as ${got} bytes with hash ${hash.slice(0, 12)}, expected ${size} bytes and ${etag.slice(0, 12)}; the partial file was removed, try again`);
    }
    fs.renameSync(partial, blob);
  }
  fs.mkdirSync(path.dirname(link), { recursive: true });
  fs.rmSync(link, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(link), blob), link);
  } catch {
    fs.copyFileSync(blob, link); // no symlinks on this file system
  }
}

/** sha256 of the content (LFS), or git's blob id: sha1 of "blob <size>\0" + content. */
async function fileHash(file: string, kind: 'sha256' | 'git-sha1', size: number): Promise<string> {
  const hash = createHash(kind === 'sha256' ? 'sha256' : 'sha1');
  if (kind === 'git-sha1') hash.update(`blob ${size}\0`);
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
