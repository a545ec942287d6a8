import i18n from "i18next";
import { initReactI18next } from "react-i18next";
import { adminEn, adminRu } from "./i18n-admin";
import { sectionEn, sectionRu } from "./i18n-section";

// Russian terms follow the seed's help page (communication panel of BPMSoft/Creatio).
const en = {
  appName: "Ferrydesk",
  login: { title: "Sign in", username: "Username", password: "Password", submit: "Sign in", failed: "Wrong username or password", throttled: "Too many attempts, try again later" },
  status: { active: "Active", inactive: "Inactive", chats_exceeded: "Chats exceeded", label: "Status" },
  tabs: { chats: "Chats" },
  lists: { new: "New", active: "Active", noNew: "No new chats", noActive: "No active chats", load: "Chats: {{load}}/{{limit}}" },
  chat: {
    accept: "Accept chat",
    finish: "Finish chat",
    transfer: "Transfer",
    actions: "Actions",
    noActions: "No actions available",
    send: "Send",
    attach: "Attach a file",
    templates: "Templates",
    placeholder: "Type a message… (// for templates, Shift+Enter for a new line)",
    select: "Select a chat on the left",
    notSent: "Not sent: {{error}}",
    retry: "Retry",
    draftSaved: "Draft saved",
    history: "Earlier conversation",
    newChat: "New chat",
    inProgress: "In progress",
    completed: "Completed",
    system: "System",
    client: "Client",
    delivery: { queued: "queued", sent: "sent", delivered: "delivered", failed: "failed" },
    noTemplates: "No templates found",
    finished: "The chat is finished",
  },
  transfer: { title: "Transfer chat", queues: "Queues", operators: "Operators", search: "Search", to: "Transfer", cancel: "Cancel" },
  menu: { logout: "Log out", language: "Language", mute: "Mute notifications", unmute: "Unmute notifications" },
  notify: { newChat: "New chat from {{name}}" },
  sys: { toQueue: "Transferred to queue {{queue}} by {{by}}", toOperator: "Transferred to {{to}} by {{by}}", finished: "Chat finished", autoFinished: "Chat finished automatically: the client did not answer" },
  card: { title: "Contact", identities: "Identities", earlier: "Earlier chats", none: "None" },
  nav: { desk: "Communication panel", section: "Chats section", contacts: "Contacts", admin: "Administration" },
  admin: adminEn,
  section: sectionEn,
};

const ru: typeof en = {
  appName: "Ferrydesk",
  login: { title: "Вход", username: "Имя пользователя", password: "Пароль", submit: "Войти", failed: "Неверное имя пользователя или пароль", throttled: "Слишком много попыток, попробуйте позже" },
  status: { active: "Активный", inactive: "Неактивный", chats_exceeded: "Превышено количество чатов", label: "Статус" },
  tabs: { chats: "Чаты" },
  lists: { new: "Новые", active: "Активные", noNew: "Нет новых чатов", noActive: "Нет активных чатов", load: "Чаты: {{load}}/{{limit}}" },
  chat: {
    accept: "Принять чат",
    finish: "Завершить чат",
    transfer: "Перевести",
    actions: "Действия",
    noActions: "Нет доступных действий",
    send: "Отправить",
    attach: "Прикрепить файл",
    templates: "Шаблоны",
    placeholder: "Введите сообщение… (// — шаблоны, Shift+Enter — новая строка)",
    select: "Выберите чат слева",
    notSent: "Не отправлено: {{error}}",
    retry: "Повторить",
    draftSaved: "Черновик сохранён",
    history: "Предыдущая переписка",
    newChat: "Новый",
    inProgress: "В работе",
    completed: "Завершён",
    system: "Система",
    client: "Клиент",
    delivery: { queued: "в очереди", sent: "отправлено", delivered: "доставлено", failed: "ошибка" },
    noTemplates: "Шаблоны не найдены",
    finished: "Чат завершён",
  },
  transfer: { title: "Перевод чата", queues: "Очереди", operators: "Операторы", search: "Поиск", to: "Перевести", cancel: "Отмена" },
  menu: { logout: "Выйти", language: "Язык", mute: "Выключить уведомления", unmute: "Включить уведомления" },
  notify: { newChat: "Новый чат: {{name}}" },
  sys: { toQueue: "Переведён в очередь «{{queue}}» сотрудником {{by}}", toOperator: "Переведён на {{to}} сотрудником {{by}}", finished: "Чат завершён", autoFinished: "Чат завершён автоматически: клиент не ответил" },
  card: { title: "Контакт", identities: "Идентификаторы", earlier: "Предыдущие чаты", none: "Нет" },
  nav: { desk: "Панель коммуникаций", section: "Раздел «Чаты»", contacts: "Контакты", admin: "Администрирование" },
  admin: adminRu,
  section: sectionRu,
};

void i18n.use(initReactI18next).init({
  resources: { en: { translation: en }, ru: { translation: ru } },
  lng: localStorage.getItem("ferrydesk:lang") ?? "en",
  fallbackLng: "en",
  interpolation: { escapeValue: false },
});

export default i18n;
