// The page's jobs, newest first, kept in the browser's storage across visits (the server keeps the results for
// --keep-hours; an expired one answers "unknown task"). `storage`: localStorage, or any object with its methods.

export const STORAGE_KEY = "mlx-acestep.history";
export const KEEP = 100;

export class History {
  constructor(storage) {
    this.storage = storage;
  }

  list() {
    try {
      const parsed = JSON.parse(this.storage.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(parsed) ? parsed : [];
    } catch {
      return []; // unreadable: start again rather than fail the page
    }
  }

  get(id) {
    return this.list().find((record) => record.id === id);
  }

  write(records) {
    this.storage.setItem(STORAGE_KEY, JSON.stringify(records.slice(0, KEEP)));
  }

  add(record) {
    this.write([record, ...this.list().filter((r) => r.id !== record.id)]);
  }

  update(id, patch) {
    this.write(this.list().map((r) => (r.id === id ? { ...r, ...patch } : r)));
  }

  remove(id) {
    this.write(this.list().filter((r) => r.id !== id));
  }
}
