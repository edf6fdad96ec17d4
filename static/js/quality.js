// The step form's quality: a judge's criteria rows and the "Keep only" condition rows
// (added from a <template>, removed, at most 10 of each), each criterion's levels
// following its scale, and the similarity shown only for near duplicates. No inline
// scripts (the CSP forbids them); rows post in page order, read with getlist.
(function () {
  "use strict";

  const MAX_ROWS = 10;
  const LISTS = [
    { add: "#crit-add", list: "#criteria-rows", template: "#crit-template", row: "li.crit", remove: ".crit-remove" },
    { add: "#keep-add", list: "#keep-rows", template: "#keep-template", row: "li.keep-row", remove: ".keep-remove" },
  ];

  function changed(form) {
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function rows(form, kind) {
    const list = form.querySelector(kind.list);
    return list ? list.querySelectorAll(":scope > " + kind.row) : [];
  }

  function sync(form, kind) {
    const all = rows(form, kind);
    all.forEach(function (li, i) {
      const number = li.querySelector(".crit-number");
      if (number) number.textContent = String(i + 1);
    });
    const add = form.querySelector(kind.add);
    if (add) add.disabled = all.length >= MAX_ROWS;
  }

  function addRow(form, kind) {
    const template = form.querySelector(kind.template);
    const list = form.querySelector(kind.list);
    if (!template || !list || rows(form, kind).length >= MAX_ROWS) return;
    const row = template.content.firstElementChild.cloneNode(true);
    list.appendChild(row);
    sync(form, kind);
    const first = row.querySelector("input[type=text]");
    if (first) first.focus();
  }

  function syncLevels(row) {
    const scale = row.querySelector("select[name='crit-scale']");
    if (!scale) return;
    row.querySelectorAll(".crit-levels").forEach(function (group) {
      group.hidden = group.dataset.scale !== scale.value;
    });
  }

  function syncNear(form) {
    const near = form.querySelector("input[name='step-dedup_near']");
    const threshold = form.querySelector("[data-field='dedup_threshold']");
    if (near && threshold) threshold.hidden = !near.checked && !threshold.classList.contains("invalid");
  }

  document.addEventListener("click", function (e) {
    const form = e.target.closest && e.target.closest("#step-form");
    if (!form) return;
    LISTS.forEach(function (kind) {
      if (e.target.closest(kind.add)) {
        addRow(form, kind);
        changed(form);
        return;
      }
      const remove = e.target.closest(kind.remove);
      if (remove) {
        remove.closest(kind.row).remove();
        sync(form, kind);
        changed(form);
      }
    });
  });

  document.addEventListener("change", function (e) {
    const target = e.target;
    if (!target.matches) return;
    if (target.matches("select[name='crit-scale']")) syncLevels(target.closest("li.crit"));
    if (target.matches("input[name='step-dedup_near']")) syncNear(target.closest("form"));
  });

  htmx.onLoad(function () {
    const form = document.getElementById("step-form");
    if (!form) return;
    LISTS.forEach(function (kind) { sync(form, kind); });
    syncNear(form);
  });
})();
