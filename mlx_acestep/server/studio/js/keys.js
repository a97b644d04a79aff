// The API key: asked once (when the server first answers 401), kept in the browser's storage.

export const KEY_STORAGE = "mlx-acestep.key";

export function makeKeys(dialog, storage) {
  let asking = null;
  const keys = {
    get: () => storage.getItem(KEY_STORAGE) || "",
    set(key) {
      if (key) storage.setItem(KEY_STORAGE, key);
      else storage.removeItem(KEY_STORAGE);
    },
    // A promise of the key the user types (null: cancelled); `why` is the server's message.
    ask(why = "") {
      if (asking) return asking;
      dialog.querySelector("#key-why").textContent = why;
      const input = dialog.querySelector("#key-input");
      input.value = "";
      asking = new Promise((resolve) => {
        dialog.addEventListener(
          "close",
          () => {
            asking = null;
            const ok = dialog.returnValue === "ok" && input.value;
            if (ok) keys.set(input.value);
            resolve(ok ? input.value : null);
          },
          { once: true },
        );
      });
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
      return asking;
    },
  };
  return keys;
}
