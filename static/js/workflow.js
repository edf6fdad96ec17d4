// The step form's workflow section: one prompt or several, the prompts reordered by
// dragging (SortableJS), added and removed, their chips, and the pick-lists that
// follow what is typed (the prompts' names for "go to", the saved replies for the
// return value). No inline scripts (the CSP forbids them); text is set with
// textContent only. The rows post in page order: the server reads them with getlist.
(function () {
  "use strict";

  function section(form) {
    return form ? form.querySelector("#workflow") : null;
  }

  function changed(form) {
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // -- one prompt or several -------------------------------------------------------

  function syncMode(form) {
    const mode = form.querySelector("select[name='step-mode']");
    if (!mode) return;
    form.querySelectorAll("[data-mode]").forEach(function (el) {
      el.hidden = el.dataset.mode !== mode.value;
    });
  }

  // -- the pick-lists follow the rows --------------------------------------------------

  function values(wf, name) {
    const out = [];
    wf.querySelectorAll("#wf-tasks input[name='" + name + "']").forEach(function (input) {
      const v = input.value.trim();
      if (v && out.indexOf(v) < 0) out.push(v);
    });
    return out;
  }

  function option(value, label, selected) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    o.selected = selected;
    return o;
  }

  function syncLists(wf) {
    const ids = values(wf, "wf-id");
    wf.querySelectorAll("select.wf-goto").forEach(function (select) {
      const current = select.value;
      select.replaceChildren(option("", "(the next prompt)", current === ""));
      ids.concat(["_end"]).forEach(function (id) {
        select.appendChild(option(id, id === "_end" ? "the end" : id, id === current));
      });
      if (current && select.value !== current) {
        select.appendChild(option(current, current, true)); // renamed: keep it, the server says so
      }
    });
    const returns = wf.querySelector("select[name='wf-return']");
    if (returns) {
      const keys = values(wf, "wf-key");
      const chosen = Array.from(returns.options).filter(function (o) { return o.selected; })
        .map(function (o) { return o.value; });
      returns.replaceChildren();
      chosen.concat(keys.filter(function (k) { return chosen.indexOf(k) < 0; }))
        .forEach(function (k) { returns.appendChild(option(k, k, chosen.indexOf(k) >= 0)); });
    }
    wf.querySelectorAll("#wf-tasks > li.wf-task").forEach(function (li, i) {
      const number = li.querySelector(".wf-number");
      if (number) number.textContent = String(i + 1);
    });
  }

  // -- adding, removing, reordering ------------------------------------------------------

  function unique(base, taken) {
    let n = 1;
    while (taken.indexOf(base + n) >= 0) n += 1;
    return base + n;
  }

  function addPrompt(wf) {
    const template = wf.querySelector("#wf-task-template");
    const list = wf.querySelector("#wf-tasks");
    if (!template || !list) return;
    const row = template.content.firstElementChild.cloneNode(true);
    const id = unique("prompt", values(wf, "wf-id"));
    row.querySelector("input[name='wf-id']").value = id;
    row.querySelector("input[name='wf-key']").value = unique("reply", values(wf, "wf-key"));
    list.appendChild(row);
    syncLists(wf);
    row.querySelector("textarea[name='wf-prompt']").focus();
  }

  function initSortable(wf) {
    const list = wf.querySelector("#wf-tasks");
    if (!list || list.dataset.sortable || typeof Sortable === "undefined") return;
    list.dataset.sortable = "1";
    Sortable.create(list, {
      group: { name: "wf-tasks", pull: false, put: false },
      handle: ".wf-grip",
      forceFallback: true,
      animation: 120,
      onUpdate: function () {
        syncLists(wf);
        changed(wf.closest("form"));
      },
    });
  }

  // -- chips: insert a {{variable}} into the prompt being written ---------------------------

  let lastPrompt = null;
  document.addEventListener("focusin", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-wf-prompt]")) lastPrompt = e.target;
  });

  document.addEventListener("click", function (e) {
    const target = e.target;
    if (!target.closest) return;
    const wf = target.closest("#workflow");
    if (!wf) return;
    const form = wf.closest("form");
    if (target.closest("#wf-add")) {
      addPrompt(wf);
      changed(form);
      return;
    }
    const remove = target.closest(".wf-remove");
    if (remove) {
      const rows = wf.querySelectorAll("#wf-tasks > li.wf-task");
      if (rows.length > 1) {
        remove.closest("li.wf-task").remove();
        syncLists(wf);
        changed(form);
      }
      return;
    }
    const chip = target.closest(".wf-chip[data-wf-insert]");
    if (!chip) return;
    const row = chip.closest("li.wf-task");
    let field = lastPrompt && row.contains(lastPrompt) ? lastPrompt : null;
    field = field || row.querySelector("textarea[name='wf-prompt']");
    const text = "{{" + chip.dataset.wfInsert + "}}";
    const start = typeof field.selectionStart === "number" ? field.selectionStart : field.value.length;
    const end = typeof field.selectionEnd === "number" ? field.selectionEnd : start;
    field.setRangeText(text, start, end, "end");
    field.focus();
    field.dispatchEvent(new Event("input", { bubbles: true }));
  });

  document.addEventListener("input", function (e) {
    const wf = e.target.closest && e.target.closest("#workflow");
    if (wf && e.target.matches("input[name='wf-id'], input[name='wf-key']")) syncLists(wf);
  });

  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("select[name='step-mode']")) {
      syncMode(e.target.closest("form"));
    }
  });

  htmx.onLoad(function () {
    const form = document.getElementById("step-form");
    if (!form) return;
    syncMode(form);
    const wf = section(form);
    if (wf) initSortable(wf);
  });
})();
