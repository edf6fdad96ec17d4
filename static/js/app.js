// Small shared behaviours. No inline scripts anywhere (the CSP forbids them).
// Forms with data-confirm ask before submitting (delete, remove a step, ...).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});
