/**
 * Converted weights kept on disk, so that a second load of a model in a quantized format skips
 * reading, quantizing and serialising: the graphs that bake weights and the tensors held in
 * JavaScript, as the first load made them.
 *
 * An entry is a folder `<root>/<slot>-<key>`, the key a hash of what the conversion depends on:
 * this engine's code, the format, the options that shape the graphs, and every checkpoint file's
 * name, size and modification time (a changed checkpoint is a new key); the slot a hash of the
 * checkpoint folder and format, whose newest entry replaces the older ones. A load that finds no
 * entry writes one into a private `<key>.partial-*` folder and publishes it by renaming it at the
 * end, with its manifest inside, so a crash mid-write leaves nothing that is ever read (and its
 * folder is swept once its process is gone); an entry whose manifest fails its checksum or whose
 * files do not match the manifest's sizes is removed and rebuilt.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { CorematchingError } from '../io/errors.js';

/** Raised when the stored layout of an entry changes, so older entries are never read. */
const LAYOUT_VERSION = 1;
const MANIFEST = 'manifest.json';

type TensorType = 'float32' | 'int8' | 'uint8';
interface TensorEntry {
  type: TensorType;
  dims: number[];
  offset: number;
  bytes: number;
}
interface Manifest {
  identity: unknown;
  files: Record<string, number>;
  json: Record<string, unknown>;
  tensors: Record<string, Record<string, TensorEntry>>;
}

/** The default cache folder: $COREMATCHING_CACHE, else $XDG_CACHE_HOME/corematching, else ~/.cache/corematching. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.COREMATCHING_CACHE) return env.COREMATCHING_CACHE;
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'corematching');
}

/** What identifies a checkpoint's content for the cache: each file's name, size and modification time. */
export function checkpointFingerprint(dir: string): [string, number, number][] {
  return fs
    .readdirSync(dir)
    .filter((f) => /\.(json|safetensors)$/.test(f))
    .sort()
    .map((f) => {
      const st = fs.statSync(path.join(dir, f));
      return [f, st.size, Math.round(st.mtimeMs)];
    });
}

let engineHash: string | undefined;

/**
 * A hash of the code that converts, packs and bakes weights (this package's compiled models/,
 * graph/ and native/, and the native kernel module), so that an entry written by another version
 * of the engine, or by a developer's edited build, is never read.
 */
export function engineFingerprint(): string {
  if (engineHash === undefined) {
    const hash = createHash('sha256');
    for (const part of ['../models/', '../graph/', '../native/']) {
      const dir = new URL(part, import.meta.url);
      for (const f of fs.readdirSync(dir).filter((name) => name.endsWith('.js')).sort()) hash.update(f).update(fs.readFileSync(new URL(f, dir)));
    }
    const addon = new URL('../../../build/Release/corematching_kernels.node', import.meta.url);
    if (fs.existsSync(addon)) hash.update(fs.readFileSync(addon));
    engineHash = hash.digest('hex');
  }
  return engineHash;
}

const TYPED: Record<TensorType, { new (buffer: ArrayBuffer): Float32Array | Int8Array | Uint8Array }> = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array };

/**
 * One model's entry: read (`hit`), being written (a miss with a root), or off (no root: every
 * call builds). Loaders call `graph`, `tensors` and `json` the same way in every mode.
 */
export class ConvertedCache {
  private readonly manifest: Manifest;
  private failed = false;

  private constructor(
    /** The entry's folder (hit) or the partial folder being written (miss); null when off. */
    readonly folder: string | null,
    private readonly final: string | null,
    readonly hit: boolean,
    identity: unknown,
    manifest?: Manifest,
  ) {
    this.manifest = manifest ?? { identity, files: {}, json: {}, tensors: {} };
  }

  /** No cache: everything is built. */
  static off(): ConvertedCache {
    return new ConvertedCache(null, null, false, null);
  }

  /**
   * The entry of `identity` under `root`: a hit when a complete one exists, else a fresh one to
   * write. `slot` (e.g. the checkpoint folder and format) names what the entry replaces: publishing
   * it removes the slot's older entries (another engine build, a changed checkpoint).
   */
  static open(root: string, slot: unknown, identity: unknown): ConvertedCache {
    const hash = (value: unknown) => createHash('sha256').update(JSON.stringify({ layout: LAYOUT_VERSION, value })).digest('hex').slice(0, 16);
    const final = path.join(path.resolve(root), `${hash(slot)}-${hash(identity)}`);
    try {
      const manifest = readManifest(final);
      if (manifest !== null) return new ConvertedCache(final, final, true, identity, manifest);
      fs.rmSync(final, { recursive: true, force: true });
      const partial = `${final}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
      fs.mkdirSync(partial, { recursive: true });
      return new ConvertedCache(partial, final, false, identity);
    } catch (err) {
      throw new CorematchingError(`cannot create the converted-weight cache folder (${(err as Error).message}); choose another with --cache-dir, or --no-cache`, root);
    }
  }

  /** A serialised graph: the stored file's path on a hit (ONNX Runtime reads it), else `build()`'s bytes, stored. */
  graph(name: string, build: () => Uint8Array): Uint8Array | string {
    if (this.hit) return this.file(name);
    const bytes = build();
    this.store(name, bytes);
    return bytes;
  }

  /** Tensors held in JavaScript: read on a hit, else built and stored. */
  tensors(name: string, build: () => Record<string, ort.Tensor>): Record<string, ort.Tensor> {
    if (this.hit) {
      const entries = this.manifest.tensors[name];
      if (entries === undefined) throw this.damaged(name);
      const bytes = fs.readFileSync(this.file(name));
      return Object.fromEntries(Object.entries(entries).map(([key, e]) => {
        const data = new TYPED[e.type](bytes.buffer.slice(bytes.byteOffset + e.offset, bytes.byteOffset + e.offset + e.bytes));
        return [key, new ort.Tensor(e.type, data, e.dims)];
      }));
    }
    const tensors = build();
    if (this.folder === null) return tensors;
    const entries: Record<string, TensorEntry> = {};
    let offset = 0;
    const parts = Object.entries(tensors).map(([key, t]) => {
      const view = t.data as Float32Array | Int8Array | Uint8Array;
      entries[key] = { type: t.type as TensorType, dims: [...t.dims], offset, bytes: view.byteLength };
      offset += view.byteLength;
      return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    });
    this.store(name, Buffer.concat(parts));
    this.manifest.tensors[name] = entries;
    return tensors;
  }

  /** A small JSON value (e.g. how layers were grouped): read on a hit, else computed and stored. */
  json<T>(name: string, build: () => T): T {
    if (this.hit) {
      if (!(name in this.manifest.json)) throw this.damaged(name);
      return this.manifest.json[name] as T;
    }
    const value = build();
    this.manifest.json[name] = value;
    return value;
  }

  /** Publishes a written entry (after a successful load); a no-op on a hit or when off. */
  commit(): void {
    if (this.hit || this.failed || this.folder === null || this.final === null) return;
    fs.writeFileSync(path.join(this.folder, MANIFEST), JSON.stringify({ ...this.manifest, checksum: checksum(this.manifest) }));
    try {
      fs.renameSync(this.folder, this.final);
    } catch {
      // Another process published the same entry first: theirs stands.
      this.abandon();
    }
    const [root, name] = [path.dirname(this.final), path.basename(this.final)];
    const slot = name.slice(0, name.indexOf('-') + 1);
    for (const other of fs.readdirSync(root)) {
      const writer = /\.partial-(\d+)-/.exec(other);
      if (other.startsWith(slot) && other !== name && (writer === null || !isAlive(Number(writer[1])))) fs.rmSync(path.join(root, other), { recursive: true, force: true });
    }
  }

  /** Removes a partial entry (after a failed load). */
  abandon(): void {
    if (!this.hit) this.remove();
  }

  /** Removes the entry, complete or not. */
  remove(): void {
    if (this.folder !== null) fs.rmSync(this.folder, { recursive: true, force: true });
  }

  /** A stored file's path (a hit only). */
  file(name: string): string {
    if (!(name in this.manifest.files)) throw this.damaged(name);
    return path.join(this.folder!, name);
  }

  /** Writes a file of the entry. A cache that cannot be written (a full disk) is given up, with a warning: the load goes on. */
  private store(name: string, bytes: Uint8Array): void {
    if (this.folder === null || this.failed) return;
    try {
      fs.writeFileSync(path.join(this.folder, name), bytes);
      this.manifest.files[name] = bytes.byteLength;
    } catch (err) {
      this.failed = true;
      this.remove();
      process.emitWarning(`corematching: not keeping converted weights in ${path.dirname(this.folder)}: ${(err as Error).message}`);
    }
  }

  private damaged(name: string): CorematchingError {
    return new CorematchingError(`the converted-weight cache entry has no ${name}; delete the folder (or load with --no-cache)`, this.folder ?? '');
  }
}

function checksum(manifest: Manifest): string {
  return createHash('sha256').update(JSON.stringify([manifest.identity, manifest.files, manifest.json, manifest.tensors])).digest('hex');
}

/** An entry's manifest when the entry is complete (every file there at its size), else null (and a damaged entry is removed). */
function readManifest(folder: string): Manifest | null {
  let manifest: Manifest;
  try {
    const { checksum: stored, ...rest } = JSON.parse(fs.readFileSync(path.join(folder, MANIFEST), 'utf8')) as Manifest & { checksum: unknown };
    if (stored !== checksum(rest)) throw new Error('the manifest does not match its checksum');
    manifest = rest;
  } catch {
    fs.rmSync(folder, { recursive: true, force: true });
    return null;
  }
  const complete = Object.entries(manifest.files).every(([name, size]) => {
    if (!/^[\w-][\w.-]*$/.test(name)) return false;
    try {
      return fs.statSync(path.join(folder, name)).size === size;
    } catch {
      return false;
    }
  });
  if (!complete) fs.rmSync(folder, { recursive: true, force: true });
  return complete ? manifest : null;
}

/** Whether process `pid` still runs (its partial entry may still be being written). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
