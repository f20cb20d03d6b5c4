// Small progressive enhancements; every page works without them.
// A [data-copy] button copies the text of the element it names. The clipboard API needs a
// focused document; where it refuses, a selected off-screen textarea and execCommand do it.
// The button then reads its data-copied label for a moment and keeps data-state="copied".
function copied(button) {
  var label = button.getAttribute("data-label") || button.textContent;
  button.setAttribute("data-label", label);
  button.setAttribute("data-state", "copied");
  button.textContent = button.getAttribute("data-copied") || "OK";
  setTimeout(function () { button.textContent = label; }, 1500);
}
function copyBySelection(text) {
  var area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  var ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  document.body.removeChild(area);
  return ok;
}
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  var text = source.textContent.trim();
  var fallback = function () {
    if (copyBySelection(text)) copied(button); else button.setAttribute("data-state", "failed");
  };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(function () { copied(button); }, fallback);
  } else {
    fallback();
  }
});

// A form with data-confirm asks before it is sent (no inline handlers: the CSP forbids them).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.hasAttribute && form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
    event.preventDefault();
  }
});

// The payment page sends its signed form on to the gateway at once; its button is the fallback.
var autosubmit = document.querySelector("form[data-autosubmit]");
if (autosubmit) autosubmit.submit();
