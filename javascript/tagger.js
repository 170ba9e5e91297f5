// Tagger tab: paste an image from the clipboard into the Tagger image.
// Only elements with ids starting with "tagger_" are touched. Works with gradio 3.41 (AUTOMATIC1111) and 4.x
// (Forge); the standalone page loads this file itself. In the WebUI, pasting is left to the WebUI's own
// handler (javascript/dragdrop.js), which already fills the visible image field.
(function () {
    "use strict";
    if (window.taggerScriptLoaded) {
        return;
    }
    window.taggerScriptLoaded = true;

    function root() {
        if (typeof gradioApp === "function") {
            return gradioApp();
        }
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    function visible(el) {
        return !!el && el.offsetParent !== null;
    }

    function putFile(target, file, attempt) {
        const input = target.querySelector('input[type="file"]');
        if (input) {
            const data = new DataTransfer();
            data.items.add(file);
            input.files = data.files;
            input.dispatchEvent(new Event("change", { bubbles: true }));
            return;
        }
        if (attempt > 0) {
            return;
        }
        // An image is shown already: clear it (gradio 4: the "Clear" button; 3.41: the second upload tool).
        const clear = target.querySelector('button[aria-label="Clear"], .modify-upload button + button');
        if (clear) {
            clear.click();
            requestAnimationFrame(() => putFile(target, file, attempt + 1));
        }
    }

    window.addEventListener("paste", (event) => {
        if (typeof dropReplaceImage === "function") {
            return; // the WebUI pastes into the visible image field itself
        }
        const files = event.clipboardData && event.clipboardData.files;
        if (!files || files.length !== 1 || !files[0].type.startsWith("image/")) {
            return;
        }
        const target = root().querySelector("#tagger_image");
        if (!visible(target)) {
            return;
        }
        event.preventDefault();
        putFile(target, files[0], 0);
    });
})();
