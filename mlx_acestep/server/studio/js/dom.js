// h("tag.class", {attributes, onclick: fn}, ...children): the page's elements without a framework.
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// The values of a form's enabled controls (a disabled fieldset's are left out): text as typed, a checkbox as a
// boolean, or a list where several checkboxes share a name (with a value each).
export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name || el.matches(":disabled") || el.type === "file" || el.type === "button" || el.type === "submit") continue;
    if (el.type === "checkbox" && el.value !== "on") {
      values[el.name] = values[el.name] || [];
      if (el.checked) values[el.name].push(el.value);
    } else if (el.type === "checkbox") {
      values[el.name] = el.checked;
    } else if (el.type === "radio") {
      if (el.checked) values[el.name] = el.value;
    } else {
      values[el.name] = el.value;
    }
  }
  return values;
}

// Fill a form from values (the inverse of formValues); controls the values do not name are reset.
export function fillForm(form, values) {
  for (const el of form.elements) {
    if (!el.name || el.type === "file" || el.type === "button" || el.type === "submit") continue;
    const v = values[el.name];
    if (el.type === "checkbox" && el.value !== "on") el.checked = Array.isArray(v) && v.includes(el.value);
    else if (el.type === "checkbox") el.checked = v === true;
    else if (el.type === "radio") el.checked = v === el.value;
    else if (v === undefined || v === null) resetControl(el);
    else el.value = Array.isArray(v) ? v.join(",") : String(v);
    el.dispatchEvent(new Event("change", { bubbles: true }));
  }
}

function resetControl(el) {
  if (el.tagName !== "SELECT") el.value = el.defaultValue;
  else el.value = ([...el.options].find((o) => o.defaultSelected) || el.options[0] || { value: "" }).value;
}
