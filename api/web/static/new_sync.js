// The new-sync mapping editor, enhanced: as the user picks destination fields, each row's check
// (type mismatch, ok, not synced) and the "requires on create" flags follow, by the rule the server
// applies at creation (services/sync_setup.py type_mismatch: anything fits a text field; numbers,
// booleans and dates only their own kind). The page works without it: the server checks again.
"use strict";
(function () {
  const table = document.getElementById("mapping");
  if (!table) return;
  const badge = (cls, text) => {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    return span;
  };
  function check(row) {
    const select = row.querySelector("select[name=mapping]");
    const cell = row.querySelector("td.check");
    const option = select.selectedOptions[0];
    cell.replaceChildren();
    if (!option || !option.value) {
      cell.append(badge("muted small", "not synced"));
      return;
    }
    const dst = option.dataset.family;
    if (dst !== "text" && row.dataset.family !== dst) {
      cell.append(badge("badge warn mismatch", `type mismatch: ${row.dataset.type} values into a ${option.dataset.type} field`));
    } else {
      cell.append(badge("badge ok", "ok"));
    }
  }
  function required() {
    const chosen = new Set();
    table.querySelectorAll("select[name=mapping]").forEach((s) => {
      if (s.value) chosen.add(s.value.slice(s.value.indexOf("=") + 1));
    });
    const key = document.querySelector("select[name=destination_id_property]");
    if (key) chosen.add(key.value);
    document.querySelectorAll("#required .required").forEach((item) => {
      const mapped = chosen.has(item.dataset.field);
      item.querySelector("code").classList.toggle("withheld", !mapped);
      item.querySelector(".error").hidden = mapped;
    });
  }
  table.querySelectorAll("tbody tr").forEach((row) => {
    row.querySelector("select[name=mapping]").addEventListener("change", () => {
      check(row);
      required();
    });
  });
  const key = document.querySelector("select[name=destination_id_property]");
  if (key) key.addEventListener("change", required);
})();
