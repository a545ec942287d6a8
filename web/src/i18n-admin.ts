// Strings of the administration screens (pages/Admin.tsx). Keep both languages complete.
export const adminEn = {
  title: "Administration",
};

export const adminRu: typeof adminEn = {
  title: "Администрирование",
};
