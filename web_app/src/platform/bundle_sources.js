// Where a bundle's files come from: the server the page came from (mobilesd serve), or a folder the user
// picked on disk (showDirectoryPicker, or <input type=file webkitdirectory> where that API is missing).
// Every source answers readBytes(path) with a Uint8Array; BundleManifest checks what it reads.

export class HttpBundleSource {
  constructor(baseUrl) {
    this.base = new URL(baseUrl, globalThis.location?.href);
    this.label = this.base.href;
  }

  async readBytes(rel) {
    const response = await fetch(new URL(rel, this.base), { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${rel}`);
    return new Uint8Array(await response.arrayBuffer());
  }
}

export class DirectoryHandleSource {
  constructor(handle) {
    this.root = handle;
    this.label = `folder ${handle.name}`;
  }

  async readBytes(rel) {
    const parts = rel.split('/');
    let dir = this.root;
    for (const part of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(part);
    const file = await (await dir.getFileHandle(parts[parts.length - 1])).getFile();
    return new Uint8Array(await file.arrayBuffer());
  }
}

/** Files of <input type=file webkitdirectory>: paths are "<picked folder>/<path in the bundle>". */
export class FileListSource {
  constructor(fileList) {
    this.files = new Map();
    let root = null;
    for (const file of fileList) {
      const path = file.webkitRelativePath || file.name;
      const cut = path.indexOf('/');
      root ??= cut >= 0 ? path.slice(0, cut) : '';
      this.files.set(cut >= 0 ? path.slice(cut + 1) : path, file);
    }
    this.label = `folder ${root ?? ''}`;
  }

  async readBytes(rel) {
    const file = this.files.get(rel);
    if (!file) throw new Error('not in the picked folder');
    return new Uint8Array(await file.arrayBuffer());
  }
}
