// The page's table of contents sits behind the "On this page" button of the article's header
// below 1700 px (bnteach-book.css hides the sidebar there to give figures a 990 px column).
// The theme wires only the button in its top bar, which this book hides on wide screens; the
// visible button passes its click on to that one, which opens the contents as a side panel.
document.addEventListener("DOMContentLoaded", () => {
  const visible = document.querySelector(".bd-header-article .secondary-toggle");
  const wired = document.querySelector(".bd-header .secondary-toggle");
  if (visible && wired) {
    visible.addEventListener("click", (event) => {
      event.preventDefault();
      wired.click();
    });
  }
});
