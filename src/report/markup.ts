/** Text made safe inside SVG or HTML markup (element content and quoted attributes). */
export const escapeMarkup = (s: string): string => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
