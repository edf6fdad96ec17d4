// The designer page: drag and drop (SortableJS), variable chips, the callback's
// fields, and the warning about unsaved changes. No inline scripts (the CSP
// forbids them); user and model text is only ever set with textContent.
(function () {
  "use strict";

  function post(url, values, source) {
    const draft = document.getElementById("draft");
    values.draft = draft ? draft.value : "";
    return htmx.ajax("POST", url, {
      source: source,
      target: "#editor",
      swap: "outerHTML",
      values: values,
    });
  }

  // -- drag and drop ------------------------------------------------------------

  function initPalette() {
    const palette = document.getElementById("palette");
    if (!palette || palette.dataset.sortable) return;
    palette.dataset.sortable = "1";
    Sortable.create(palette, {
      group: { name: "steps", pull: "clone", put: false },
      sort: false,
      forceFallback: true,
      filter: "button",
      preventOnFilter: false,
    });
  }

  function initSteps() {
    const list = document.getElementById("steps");
    if (!list || list.dataset.sortable) return;
    list.dataset.sortable = "1";
    Sortable.create(list, {
      group: { name: "steps", pull: false, put: true },
      forceFallback: true,
      animation: 120,
      filter: "button, a, input, textarea, select",
      preventOnFilter: false,
      onAdd: function (evt) {
        const kind = evt.item.dataset.kind;
        // Sortable left a bare copy in the palette: put the original (with its htmx
        // listeners) back there; the server renders the new step.
        if (evt.clone && evt.clone.parentNode) evt.clone.replaceWith(evt.item);
        else evt.item.remove();
        post(list.dataset.addUrl, { kind: kind, index: String(evt.newIndex) }, list);
      },
      onUpdate: function (evt) {
        post(list.dataset.moveUrl, { from: String(evt.oldIndex), to: String(evt.newIndex) }, list);
      },
    });
  }

  // -- the step form -------------------------------------------------------------

  function syncFields(form) {
    if (!form) return;
    const cb = form.querySelector("select[name='step-callback']");
    const fmt = form.querySelector("select[name='step-output_format']");
    const on = new Set(["callback:" + (cb ? cb.value : ""), "format:" + (fmt ? fmt.value : "")]);
    form.querySelectorAll("[data-show-for]").forEach(function (el) {
      const wanted = el.dataset.showFor.split(" ").some(function (t) { return on.has(t); });
      el.hidden = !wanted && !el.classList.contains("invalid");
    });
  }

  let lastField = null;
  document.addEventListener("focusin", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-chip-target]")) lastField = e.target;
  });

  document.addEventListener("click", function (e) {
    const chip = e.target.closest && e.target.closest(".chip[data-insert]");
    if (!chip) return;
    const form = chip.closest("form");
    let field = lastField && form.contains(lastField) ? lastField : null;
    field = field || form.querySelector("textarea[name='step-prompt']");
    if (!field) return;
    const text = "{{" + chip.dataset.insert + "}}";
    const start = typeof field.selectionStart === "number" ? field.selectionStart : field.value.length;
    const end = typeof field.selectionEnd === "number" ? field.selectionEnd : start;
    field.setRangeText(text, start, end, "end");
    field.focus();
    field.dispatchEvent(new Event("input", { bubbles: true }));
  });

  function markChanged(e) {
    const form = e.target.closest && e.target.closest("#step-form");
    if (!form) return;
    form.dataset.changed = "true";
    if (e.type === "change") syncFields(form);
    const status = document.getElementById("save-status");
    if (status) {
      status.textContent = "Unsaved changes (Apply or Save to keep them).";
      status.classList.add("unsaved");
    }
  }
  document.addEventListener("input", markChanged);
  document.addEventListener("change", markChanged);

  // -- unsaved changes -----------------------------------------------------------

  function dirty() {
    const pipeline = document.getElementById("pipeline");
    const form = document.getElementById("step-form");
    return (
      (pipeline && pipeline.dataset.dirty === "true") ||
      (form !== null && form.dataset.changed === "true")
    );
  }

  window.addEventListener("beforeunload", function (e) {
    if (dirty()) {
      e.preventDefault();
      e.returnValue = "";
    }
  });

  document.addEventListener("htmx:responseError", function (e) {
    const status = document.getElementById("save-status");
    if (!status) return;
    const xhr = e.detail.xhr;
    status.textContent = "That did not work (" + xhr.status + "): " + (xhr.responseText || "").slice(0, 200);
    status.classList.add("unsaved");
  });

  htmx.onLoad(function () {
    initPalette();
    initSteps();
    syncFields(document.getElementById("step-form"));
  });
})();
