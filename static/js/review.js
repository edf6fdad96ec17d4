// The one-record review page, driven from the keyboard. Every key presses a
// button or follows a link that is on the page (marked data-key), so the page
// works the same without this script; the server saves each change first.
//   a accept · r reject · u unreview · 1-5 rate · 0 clear rating · e edit
//   j / → / ↓ next · k / ← / ↑ previous · ? the list of keys · in the edit form:
//   Ctrl+Enter saves, Esc closes
(function () {
  "use strict";

  const ALIASES = { ArrowRight: "j", ArrowDown: "j", ArrowLeft: "k", ArrowUp: "k" };

  function target(key) {
    return document.querySelector('[data-key="' + key + '"]');
  }

  function openEditor() {
    const details = document.getElementById("edit");
    if (!details) return;
    details.open = true;
    // the field the pipeline made last (the answer, in a question/answer run) is the
    // one people edit most: it gets the focus
    const fields = details.querySelectorAll("textarea");
    const last = fields[fields.length - 1];
    if (last) last.focus();
  }

  // An empty queue fills while the run goes: look again when the run has made records
  // since this page was shown (at most every 2 seconds).
  const empty = document.querySelector(".review-empty");
  const counted = document.querySelector('[data-bind="records"]');
  const shownWith = counted ? Number(counted.textContent.replace(/[^0-9]/g, "")) : 0;
  let lookedAt = Date.now();
  document.addEventListener("run:state", function (event) {
    if (!empty || !event.detail) return;
    const made = Number(event.detail.records || 0);
    if (made > shownWith && Date.now() - lookedAt > 2000) {
      lookedAt = Date.now();
      window.location.reload();
    }
  });

  document.addEventListener("keydown", function (event) {
    const el = event.target;
    const typing = el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" || el.isContentEditable);
    const editor = document.getElementById("edit");
    if (typing) {
      if (editor && editor.contains(el)) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          document.getElementById("edit-form").requestSubmit();
        } else if (event.key === "Escape") {
          event.preventDefault();
          editor.open = false;
          el.blur();
        }
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = ALIASES[event.key] || event.key;
    if (key === "?") {
      const sheet = document.getElementById("cheat-sheet");
      if (sheet) {
        event.preventDefault();
        sheet.hidden = !sheet.hidden;
      }
      return;
    }
    if (key === "Escape") {
      const sheet = document.getElementById("cheat-sheet");
      if (sheet && !sheet.hidden) sheet.hidden = true;
      return;
    }
    if (key === "e") {
      event.preventDefault();
      openEditor();
      return;
    }
    const node = target(key);
    if (!node) return;
    event.preventDefault();
    if (node.disabled || node.getAttribute("aria-busy") === "true") return;
    node.setAttribute("aria-busy", "true"); // one press, one action
    node.click();
  });
})();
