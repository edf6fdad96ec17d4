// The launch page: choosing a file selects "many inputs" and refuses a file over
// the size limit before it is uploaded (the server checks again). No inline scripts.
(function () {
  "use strict";

  function choose(form, value) {
    const radio = form.querySelector("input[name=source][value=" + value + "]");
    if (radio) radio.checked = true;
  }

  // Capture phase: runs before htmx's own listener on the file input.
  document.addEventListener(
    "change",
    function (e) {
      const input = e.target;
      if (!input.matches || !input.matches("#launch-form input[type=file]")) return;
      const form = input.form;
      const file = input.files && input.files[0];
      if (!file) return;
      choose(form, "file");
      const max = Number(form.dataset.maxBytes || 0);
      if (max && file.size > max) {
        e.stopPropagation(); // not uploaded
        const message = document.createElement("p");
        message.className = "error";
        message.setAttribute("role", "alert");
        message.textContent =
          "The file is " + (file.size / 1048576).toFixed(1) + " MB; files up to " +
          form.dataset.maxMb + " MB are accepted. Split it into smaller files.";
        document.getElementById("file-preview").replaceChildren(message);
        input.value = "";
      }
    },
    true
  );

  document.addEventListener("input", function (e) {
    const box = e.target.closest && e.target.closest("fieldset[data-source=one]");
    if (box && e.target.form) choose(e.target.form, "one");
  });

  // While a file goes up and is read: how much is sent, then that it is being read
  // (htmx shows #file-progress during the request: hx-indicator).
  document.addEventListener("htmx:xhr:progress", function (e) {
    const bar = document.getElementById("upload-progress");
    const words = document.getElementById("upload-words");
    if (!bar || !e.detail || !e.detail.lengthComputable) return;
    const percent = Math.round((100 * e.detail.loaded) / Math.max(1, e.detail.total));
    bar.value = percent;
    words.textContent = percent < 100 ? "Sending the file: " + percent + "%" : "Reading the file…";
  });
})();
