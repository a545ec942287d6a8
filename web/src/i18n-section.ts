// Strings of the chats section and contact pages (pages/Section.tsx, pages/ContactPage.tsx).
export const sectionEn = {
  title: "Chats section",
};

export const sectionRu: typeof sectionEn = {
  title: "Раздел «Чаты»",
};
