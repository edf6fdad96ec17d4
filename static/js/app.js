// Small shared behaviours. No inline scripts anywhere (the CSP forbids them).
// Forms with data-confirm ask before submitting (delete, remove a step, ...).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});

// The header's link to the section this page belongs to is marked as the current one.
(function markCurrentSection() {
  const path = window.location.pathname;
  document.querySelectorAll("header.top nav a").forEach((link) => {
    if (path.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
  });
})();

// Toasts (the messages of base.html): one fades away by itself (its CSS animation) and
// is then removed; "×" removes it at once. Errors stay until dismissed.
document.addEventListener("animationend", (event) => {
  if (event.animationName === "toast-out") event.target.remove();
});
document.addEventListener("click", (event) => {
  const close = event.target.closest && event.target.closest(".toast-close");
  if (close) close.closest("li").remove();
});
