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
    const first = details.querySelector("textarea");
    if (first) first.focus();
  }

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
